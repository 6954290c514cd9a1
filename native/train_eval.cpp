// Tokenization with a model's vocabulary (to check other tokenizers against llama.cpp's). The
// evaluation of a trained model (greedy completion, per-token loss) runs on native/model.cpp's Model,
// opened with the trainer's context settings (src/eval/native-runtime.ts, openFixtureRuntime).
#include "train.h"
#include "llama_util.h"

#include <string>
#include <vector>

namespace {

// tokenizeWithModel(modelPath, text, addSpecial = true): Int32Array (vocab only; to check other tokenizers against llama.cpp's)
Napi::Value TokenizeWithModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!BackendReady()) ThrowCoded(env, "ENOBACKEND", "native backend not initialized");
    std::string path = RequireString(info[0], "modelPath");
    std::string text = RequireString(info[1], "text");
    const bool add_special = BoolArgument(info, 2, true);
    std::string error;
    if (!CheckGguf(path, false, error)) ThrowCoded(env, "EUSAGE", error);
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model_ptr model(llama_model_load_from_file(path.c_str(), mp));
    if (!model) ThrowCoded(env, "EUSAGE", "llama.cpp could not load the vocabulary of " + path);
    std::vector<llama_token> tokens = Tokenize(llama_model_get_vocab(model.get()), text, add_special);
    return ToJsArray<Napi::Int32Array>(env, tokens);
}

} // namespace

void RegisterTrainEval(Napi::Env env, Napi::Object exports) {
    exports.Set("tokenizeWithModel", Napi::Function::New(env, Export<TokenizeWithModel>));
}
