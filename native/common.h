// Shared declarations of the mathneuro native shim. Each .cpp registers its own exports.
#pragma once
#include "napi_util.h"
#include <string>

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
