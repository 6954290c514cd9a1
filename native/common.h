// Shared declarations of the mathneuro native shim. Each .cpp registers its own exports.
#pragma once
#include "napi_util.h"
#include <cstdint>
#include <cstring>
#include <string>

// The little-endian 64-bit word at p (any alignment): a mask read 64 bits at a time
// (mask_codec.cpp, requantize.cpp).
inline uint64_t load_le64(const uint8_t * p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

void RegisterBackend(Napi::Env env, Napi::Object exports);
void RegisterCollector(Napi::Env env, Napi::Object exports);
void RegisterCodec(Napi::Env env, Napi::Object exports);
void RegisterTopK(Napi::Env env, Napi::Object exports);
void RegisterMaskCodec(Napi::Env env, Napi::Object exports);
void RegisterRequantize(Napi::Env env, Napi::Object exports);
void RegisterGgufIo(Napi::Env env, Napi::Object exports);
void RegisterTrain(Napi::Env env, Napi::Object exports);
void RegisterTrainEval(Napi::Env env, Napi::Object exports);
void RegisterDivergence(Napi::Env env, Napi::Object exports);

// True once init() has loaded the ggml backends; every entry point that touches a model checks it.
bool BackendReady();

// While alive, the llama.cpp warnings and errors logged on this thread are kept (a model load runs
// on one worker thread): reason() gives llama.cpp's own words for a refused model.
class LlamaLogCapture {
public:
    LlamaLogCapture();
    ~LlamaLogCapture();
    std::string reason() const;
private:
    std::string text_;
};
