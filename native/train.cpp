// Placeholder: filled in by its issue.
#include "common.h"

void RegisterTrain(Napi::Env env, Napi::Object exports) {
    (void) env; (void) exports;
}
