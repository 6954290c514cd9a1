// N-API entry point: every native module registers its own functions on the exports object.
#include "common.h"

void ThrowCoded(Napi::Env env, const char * code, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", Napi::String::New(env, code));
    throw err;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    RegisterBackend(env, exports);
    RegisterCollector(env, exports);
    RegisterCodec(env, exports);
    RegisterGgufIo(env, exports);
    RegisterTrain(env, exports);
    return exports;
}

NODE_API_MODULE(mathneuro, Init)
