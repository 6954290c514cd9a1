// Evaluation of a model trained by train.cpp (the fixture): greedy completion and per-token loss
// with a fresh CPU context, one sequence at a time, and tokenization with a model's vocabulary.
#include "train.h"
#include "llama_util.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

// Evaluation: greedy completion and per-token loss with a fresh context (batch of one sequence).

struct EvalOptions {
    std::string model_path;
    int threads = 2;
    int n_ctx = 0;             // 0: the model's training context
    int max_new_tokens = 8;
    std::string stop = "\n";   // completion ends when the generated text contains this (not included)
};

void LogSoftmaxInto(const float * logits, int n, std::vector<double> & out) {
    out.resize(n);
    double max = logits[0];
    for (int i = 1; i < n; i++) max = std::max<double>(max, logits[i]);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += std::exp((double) logits[i] - max);
    const double log_z = max + std::log(sum);
    for (int i = 0; i < n; i++) out[i] = (double) logits[i] - log_z;
}

std::string TokenText(const llama_vocab * vocab, llama_token t) {
    char buf[64];
    int n = llama_token_to_piece(vocab, t, buf, sizeof(buf), 0, false);
    return n > 0 ? std::string(buf, n) : std::string();
}

class EvalWorker : public PromiseWorker<Napi::AsyncWorker> {
public:
    enum class Kind { Greedy, Loss };
    EvalWorker(Napi::Env env, Kind kind, EvalOptions o, std::vector<std::string> texts)
        : PromiseWorker(env, "mathneuro.eval"), kind_(kind), o_(std::move(o)), texts_(std::move(texts)) {}

    void Execute() override {
        std::string error;
        try { Run(error); } catch (const std::exception & e) { error = e.what(); }
        if (!error.empty()) SetError(error);
    }

    void OnOK() override {
        Napi::Env env = Env();
        if (kind_ == Kind::Greedy) {
            Napi::Array a = Napi::Array::New(env, completions_.size());
            for (size_t i = 0; i < completions_.size(); i++) a.Set((uint32_t) i, completions_[i]);
            Resolve(a);
        } else {
            Napi::Object o = Napi::Object::New(env);
            o.Set("negativeLogLikelihood", ToJsArray<Napi::Float64Array>(env, nll_));
            o.Set("tokenCounts", ToJsArray<Napi::Float64Array>(env, counts_));
            Resolve(o);
        }
    }
    void OnError(const Napi::Error & e) override { RejectCoded("EEVAL", e.Message()); }

private:
    void Run(std::string & error) {
        llama_model_ptr model = LoadWritableModel(o_.model_path, false, error);
        if (!model) return;
        const llama_vocab * vocab = llama_model_get_vocab(model.get());
        const int n_vocab = llama_vocab_n_tokens(vocab);
        ContextOptions co;
        co.n_ctx = o_.n_ctx > 0 ? (uint32_t) o_.n_ctx : (uint32_t) llama_model_n_ctx_train(model.get());
        co.n_batch = co.n_ctx;
        co.threads = o_.threads;
        llama_context_ptr ctx = NewContext(model.get(), co, error);
        if (!ctx) return;
        const int n_ctx = (int) llama_n_ctx(ctx.get());
        llama_memory_t memory = llama_get_memory(ctx.get());
        std::vector<double> log_probs;
        for (size_t s = 0; s < texts_.size(); s++) {
            std::vector<llama_token> tokens = Tokenize(vocab, texts_[s], true);
            if (tokens.empty()) { error = "text " + std::to_string(s) + " has no tokens"; return; }
            const int budget = kind_ == Kind::Greedy ? o_.max_new_tokens : 0;
            if ((int) tokens.size() + budget > n_ctx) { error = "text " + std::to_string(s) + " does not fit the context of " + std::to_string(n_ctx) + " tokens"; return; }
            llama_memory_clear(memory, true);
            llama_batch batch = llama_batch_init((int32_t) tokens.size(), 0, 1);
            FillSequenceBatch(batch, tokens, 0, (int32_t) tokens.size(), /*logits_all =*/ kind_ == Kind::Loss);
            const int rc = llama_decode(ctx.get(), batch);
            llama_batch_free(batch);
            if (rc != 0) { error = "llama_decode failed (" + std::to_string(rc) + ")"; return; }
            if (kind_ == Kind::Loss) {
                double nll = 0;
                for (size_t i = 0; i + 1 < tokens.size(); i++) {
                    LogSoftmaxInto(llama_get_logits_ith(ctx.get(), (int32_t) i), n_vocab, log_probs);
                    nll -= log_probs[tokens[i + 1]];
                }
                nll_.push_back(nll);
                counts_.push_back((double) tokens.size() - 1);
                continue;
            }
            std::string text;
            for (int k = 0; k < o_.max_new_tokens; k++) {
                const float * logits = llama_get_logits_ith(ctx.get(), -1);
                llama_token best = 0;
                for (int v = 1; v < n_vocab; v++) if (logits[v] > logits[best]) best = v;   // ties: lowest id
                if (llama_vocab_is_eog(vocab, best)) break;
                text += TokenText(vocab, best);
                if (!o_.stop.empty() && text.find(o_.stop) != std::string::npos) break;
                if (k + 1 == o_.max_new_tokens) break;
                llama_batch next = llama_batch_get_one(&best, 1);
                if (llama_decode(ctx.get(), next) != 0) { error = "llama_decode failed while generating"; return; }
            }
            if (!o_.stop.empty()) {
                size_t at = text.find(o_.stop);
                if (at != std::string::npos) text.resize(at);
            }
            completions_.push_back(text);
        }
    }

    Kind kind_;
    EvalOptions o_;
    std::vector<std::string> texts_;
    std::vector<std::string> completions_;
    std::vector<double> nll_;
    std::vector<double> counts_;
};

EvalOptions ReadEvalOptions(Napi::Env env, const Napi::CallbackInfo & info) {
    EvalOptions o;
    o.model_path = RequireString(info[0], "modelPath");
    if (info.Length() > 2 && info[2].IsObject()) {
        Napi::Object in = info[2].As<Napi::Object>();
        o.threads = IntOption(in, "threads", o.threads, 1, 512);
        o.n_ctx = IntOption(in, "nCtx", 0, 0, 1 << 20);
        o.max_new_tokens = IntOption(in, "maxNewTokens", o.max_new_tokens, 1, 4096);
        if (IsSet(in, "stop")) o.stop = RequireString(in.Get("stop"), "stop");
    } else if (info.Length() > 2 && !info[2].IsUndefined()) {
        ThrowCoded(env, "EUSAGE", "options must be an object");
    }
    return o;
}

// greedyComplete and textLoss: (modelPath, texts, options?) and one worker.
Napi::Value StartEval(const Napi::CallbackInfo & info, EvalWorker::Kind kind, const char * usage, const char * texts_name) {
    Napi::Env env = info.Env();
    if (!BackendReady()) ThrowCoded(env, "ENOBACKEND", "native backend not initialized");
    if (info.Length() < 2) ThrowCoded(env, "EUSAGE", usage);
    EvalOptions o = ReadEvalOptions(env, info);
    return (new EvalWorker(env, kind, std::move(o), RequireStringArray(info[1], texts_name)))->Start();
}

// greedyComplete(modelPath, prompts, { maxNewTokens, stop, threads, nCtx }): Promise<string[]>
// Each prompt is tokenized with BOS; completion stops at `stop`, an end-of-generation token or maxNewTokens.
Napi::Value GreedyComplete(const Napi::CallbackInfo & info) {
    return StartEval(info, EvalWorker::Kind::Greedy, "greedyComplete(modelPath, prompts, options?)", "prompts");
}

// textLoss(modelPath, texts, { threads, nCtx }): Promise<{ negativeLogLikelihood: Float64Array, tokenCounts: Float64Array }>
// Per text: the summed negative log-likelihood (nats) of every token after BOS, and how many tokens that is.
Napi::Value TextLoss(const Napi::CallbackInfo & info) {
    return StartEval(info, EvalWorker::Kind::Loss, "textLoss(modelPath, texts, options?)", "texts");
}

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
    exports.Set("greedyComplete", Napi::Function::New(env, Export<GreedyComplete>));
    exports.Set("textLoss", Napi::Function::New(env, Export<TextLoss>));
    exports.Set("tokenizeWithModel", Napi::Function::New(env, Export<TokenizeWithModel>));
}
