// N-API entry point: every native module registers its own functions on the exports object.
#include "common.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    RegisterBackend(env, exports);
    RegisterCollector(env, exports);
    RegisterCodec(env, exports);
    RegisterTopK(env, exports);
    RegisterMaskCodec(env, exports);
    RegisterRequantize(env, exports);
    RegisterGgufIo(env, exports);
    RegisterTrain(env, exports);
    RegisterTrainEval(env, exports);
    RegisterDivergence(env, exports);
    return exports;
}

NODE_API_MODULE(mathneuro, Init)
