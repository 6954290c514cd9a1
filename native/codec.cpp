// Placeholder: filled in by its issue.
#include "common.h"

void RegisterCodec(Napi::Env env, Napi::Object exports) {
    (void) env; (void) exports;
}
