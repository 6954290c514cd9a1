// Placeholder: filled in by its issue.
#include "common.h"

void RegisterGgufIo(Napi::Env env, Napi::Object exports) {
    (void) env; (void) exports;
}
