// Training a small model from scratch with llama.cpp's training API (llama_opt_init / llama_opt_epoch),
// plus what the trained fixture needs around it: an F32 GGUF writer for the random init, greedy
// completion and per-token loss for held-out evaluation, and tokenization (to check the TS vocab).
//
// Three problems of llama_opt_epoch in the bundled release are worked around here (see
// shared/docs/training-notes.md): gradients are zeroed after every optimizer step, token_embd is
// made a parameter, and the K/V projections get gradients through native/patches/kv-gradient.diff
// (source build only; the prebuilt libllama trains attn_k/attn_v not at all).
#include "train.h"
#include "ggml-cpp.h"
#include "ggml-opt.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Model and context creation shared by training and evaluation (train.h).

bool CheckGguf(const std::string & path, bool require_f32, std::string & error) {
    FILE * f = fopen(path.c_str(), "rb");   // checked first: gguf_init_from_file logs a missing file to stderr
    if (!f) { error = "not a readable GGUF file: " + path; return false; }
    fclose(f);
    gguf_init_params params = { /*no_alloc =*/ true, /*ctx =*/ nullptr };
    gguf_context_ptr g(gguf_init_from_file(path.c_str(), params));
    if (!g) { error = "not a readable GGUF file: " + path; return false; }
    if (require_f32) {
        for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); i++) {
            if (gguf_get_tensor_type(g.get(), i) != GGML_TYPE_F32) {
                error = std::string("training needs an all-F32 model; tensor ") + gguf_get_tensor_name(g.get(), i) + " is " +
                        ggml_type_name(gguf_get_tensor_type(g.get(), i));
                return false;
            }
        }
    }
    return true;
}

llama_model_ptr LoadWritableModel(const std::string & path, bool require_f32, std::string & error) {
    if (!BackendReady()) { error = "native backend not initialized"; return nullptr; }
    if (!CheckGguf(path, require_f32, error)) return nullptr;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;              // training runs on the CPU; evaluation of this tiny model too
    mp.load_mode = LLAMA_LOAD_MODE_NONE;   // writable weights, no mmap
    mp.use_extra_bufts = false;       // no repacked weights: training writes them in place
    llama_model_ptr model(llama_model_load_from_file(path.c_str(), mp));
    if (!model) error = "llama.cpp could not load the model " + path;
    return model;
}

llama_context_ptr NewContext(llama_model * model, const ContextOptions & o, std::string & error) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = o.n_ctx;
    cp.n_batch = o.n_batch;
    cp.n_ubatch = o.n_batch;
    cp.n_seq_max = o.n_seq;
    cp.n_threads = o.threads;
    cp.n_threads_batch = o.threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;  // no backward pass for FLASH_ATTN_EXT
    cp.type_k = GGML_TYPE_F32;                             // OUT_PROD has no F16 path
    cp.type_v = GGML_TYPE_F32;
    cp.cb_eval = o.cb_eval;
    cp.cb_eval_user_data = o.cb_eval_user_data;
    llama_context_ptr ctx(llama_init_from_model(model, cp));
    if (!ctx) error = "llama.cpp could not create a context";
    return ctx;
}

namespace {

// ggml-cpp.h has no pointer types for ggml-opt's objects.
struct OptDatasetDeleter { void operator()(ggml_opt_dataset * d) const { ggml_opt_dataset_free(d); } };
struct OptResultDeleter { void operator()(ggml_opt_result * r) const { ggml_opt_result_free(r); } };

// ---------------------------------------------------------------------------------------------
// Training.

struct TrainOptions {
    std::string model_path;      // the random-init (or any all-F32) model to start from
    std::string output_path;     // where the trained model is written
    std::vector<int32_t> tokens; // n_windows x (n_ctx + 1) tokens: window w predicts tokens[1..n_ctx] from [0..n_ctx-1]
    int n_ctx = 256;
    int threads = 2;
    double learning_rate = 3e-3;
    double min_learning_rate = 3e-5;
    int warmup_steps = 200;
    double beta1 = 0.9;
    double beta2 = 0.99;
    double eps = 1e-8;
    double weight_decay = 0.01;
    int report_every = 100;
    int chunk_windows = 256;     // windows per llama_opt_epoch call
};

struct TrainProgress {
    int64_t step = 0;
    int64_t steps = 0;
    double loss = 0;             // mean training loss (nats/token) over the steps since the last report
    double learning_rate = 0;
    double elapsed_seconds = 0;
};

// Everything the eval and epoch callbacks share. The callbacks run on the thread that calls
// llama_opt_epoch (the worker thread), never on the JS thread.
struct TrainState {
    const TrainOptions * options = nullptr;
    int64_t total_steps = 0;
    int64_t optimizer_steps = 0;             // get_opt_pars calls = AdamW steps taken
    double current_lr = 0;
    std::set<ggml_tensor *> gradients;       // roots of every gradient an OPT_STEP_ADAMW node reads
    ggml_tensor * token_embd = nullptr;      // found through the GET_ROWS of the first decode
    std::vector<TrainProgress> pending;      // progress reports made inside the epoch callback
    double loss_sum = 0;
    int64_t loss_count = 0;
    int64_t steps_done = 0;
    std::chrono::steady_clock::time_point started;
};

ggml_tensor * ViewRoot(ggml_tensor * t) {
    while (t && t->view_src) t = t->view_src;
    return t;
}

// Eval callback on the training context: only looks (ask == true) and never asks for data, so the
// graph still runs in one piece per split. Collects the gradient accumulators and the embedding.
bool TrainEvalCallback(ggml_tensor * t, bool ask, void * user_data) {
    auto * state = static_cast<TrainState *>(user_data);
    if (!ask) return true;
    if (t->op == GGML_OP_OPT_STEP_ADAMW && t->src[1]) {
        state->gradients.insert(ViewRoot(t->src[1]));
    } else if (t->op == GGML_OP_GET_ROWS && state->token_embd == nullptr && t->src[0] &&
               strcmp(t->src[0]->name, "token_embd.weight") == 0) {
        state->token_embd = t->src[0];
    }
    return false;
}

// Step-based schedule (reproducible, unlike a wall-clock one): linear warm-up, then cosine decay.
double ScheduledLearningRate(const TrainOptions & o, int64_t step, int64_t total) {
    if (step < o.warmup_steps) return o.learning_rate * (double) (step + 1) / (double) o.warmup_steps;
    const double span = std::max<int64_t>(1, total - o.warmup_steps);
    const double progress = std::min(1.0, (double) (step - o.warmup_steps) / span);
    return o.min_learning_rate + 0.5 * (o.learning_rate - o.min_learning_rate) * (1.0 + std::cos(3.14159265358979323846 * progress));
}

ggml_opt_optimizer_params TrainOptimizerParams(void * user_data) {
    auto * state = static_cast<TrainState *>(user_data);
    const TrainOptions & o = *state->options;
    ggml_opt_optimizer_params p = ggml_opt_get_default_optimizer_params(nullptr);
    state->current_lr = ScheduledLearningRate(o, state->optimizer_steps, state->total_steps);
    state->optimizer_steps++;
    p.adamw.alpha = (float) state->current_lr;
    p.adamw.beta1 = (float) o.beta1;
    p.adamw.beta2 = (float) o.beta2;
    p.adamw.eps = (float) o.eps;
    p.adamw.wd = (float) o.weight_decay;   // applied as w *= 1 - lr*wd: plain wd, not wd/lr
    return p;
}

TrainState * g_epoch_state = nullptr;   // ggml_opt_epoch_callback has no user data; one training at a time

void TrainEpochCallback(bool train, ggml_opt_context_t, ggml_opt_dataset_t, ggml_opt_result_t result,
                        int64_t, int64_t, int64_t) {
    TrainState * state = g_epoch_state;
    if (!train || state == nullptr) return;
    // Fix 1: llama_opt_epoch never resets the accumulated gradients between steps.
    for (ggml_tensor * g : state->gradients) {
        if (g->buffer) ggml_backend_tensor_memset(g, 0, 0, ggml_nbytes(g));
    }
    double loss = 0, unc = 0;
    ggml_opt_result_loss(result, &loss, &unc);
    ggml_opt_result_reset(result);
    if (std::isfinite(loss)) { state->loss_sum += loss; state->loss_count++; }
    state->steps_done++;
    const TrainOptions & o = *state->options;
    if (state->steps_done % o.report_every == 0 || state->steps_done == state->total_steps) {
        TrainProgress p;
        p.step = state->steps_done;
        p.steps = state->total_steps;
        p.loss = state->loss_count ? state->loss_sum / state->loss_count : NAN;
        p.learning_rate = state->current_lr;
        p.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - state->started).count();
        state->pending.push_back(p);
        state->loss_sum = 0;
        state->loss_count = 0;
    }
}

// llama_model_save_to_file writes every hparam of llama.cpp (155 keys, e.g. a layer_norm_epsilon of 0
// that validators rightly distrust). The trained file keeps the metadata of the model training
// started from instead: its keys, its tensor order, the trained tensors' data.
bool WriteWithMetadataOf(const std::string & metadata_from, const std::string & tensors_from, const std::string & out, std::string & error) {
    gguf_init_params meta_params = { /*no_alloc =*/ true, /*ctx =*/ nullptr };
    gguf_context_ptr meta(gguf_init_from_file(metadata_from.c_str(), meta_params));
    ggml_context * data_ctx_raw = nullptr;
    gguf_init_params data_params = { /*no_alloc =*/ false, /*ctx =*/ &data_ctx_raw };
    gguf_context_ptr data(gguf_init_from_file(tensors_from.c_str(), data_params));
    ggml_context_ptr data_ctx(data_ctx_raw);
    if (!meta || !data || !data_ctx) { error = "could not read back " + (meta ? tensors_from : metadata_from); return false; }
    gguf_context_ptr g(gguf_init_empty());
    gguf_set_kv(g.get(), meta.get());
    for (int64_t i = 0; i < gguf_get_n_tensors(meta.get()); i++) {
        const char * name = gguf_get_tensor_name(meta.get(), i);
        ggml_tensor * t = ggml_get_tensor(data_ctx.get(), name);
        if (!t || t->type != gguf_get_tensor_type(meta.get(), i)) { error = std::string("the trained model lacks tensor ") + name; return false; }
        gguf_add_tensor(g.get(), t);
    }
    if (gguf_get_n_tensors(data.get()) != gguf_get_n_tensors(meta.get())) { error = "the trained model has extra tensors"; return false; }
    if (!gguf_write_to_file(g.get(), out.c_str(), /*only_meta =*/ false)) { error = "could not write " + out; return false; }
    return true;
}

bool g_training_busy = false;   // guarded by the JS thread: set in TrainModel, cleared in OnOK/OnError

class TrainWorker : public PromiseWorker<Napi::AsyncProgressQueueWorker<TrainProgress>> {
public:
    TrainWorker(Napi::Env env, TrainOptions options, Napi::Function on_progress)
        : PromiseWorker(env, "mathneuro.train"), options_(std::move(options)) {
        if (!on_progress.IsEmpty()) on_progress_ = Napi::Persistent(on_progress);
    }

    void Execute(const ExecutionProgress & progress) override {
        std::string error;
        try {
            Run(progress, error);
        } catch (const std::exception & e) {
            error = std::string("training failed: ") + e.what();
        }
        g_epoch_state = nullptr;
        if (!error.empty()) SetError(error);
    }

    void OnProgress(const TrainProgress * data, size_t count) override {
        if (on_progress_.IsEmpty()) return;
        Napi::Env env = Env();
        for (size_t i = 0; i < count; i++) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("step", (double) data[i].step);
            o.Set("steps", (double) data[i].steps);
            o.Set("loss", data[i].loss);
            o.Set("learningRate", data[i].learning_rate);
            o.Set("elapsedSeconds", data[i].elapsed_seconds);
            try { on_progress_.Call({o}); } catch (const Napi::Error &) { /* a throwing progress callback must not stop training */ }
        }
    }

    void OnOK() override {
        g_training_busy = false;
        Napi::Env env = Env();
        Napi::Object o = Napi::Object::New(env);
        o.Set("steps", (double) result_steps_);
        o.Set("tokens", (double) result_steps_ * options_.n_ctx);
        o.Set("seconds", seconds_);
        o.Set("finalLoss", final_loss_);
        o.Set("parameters", (double) n_params_);
        o.Set("trainedTensors", (double) n_trained_tensors_);
        o.Set("nCtx", (double) options_.n_ctx);
        Resolve(o);
    }

    void OnError(const Napi::Error & e) override {
        g_training_busy = false;
        RejectCoded("EDECODE", e.Message());
    }

private:
    void Run(const ExecutionProgress & progress, std::string & error) {
        const TrainOptions & o = options_;
        TrainState state;
        state.options = &o;
        const int64_t window = o.n_ctx + 1;
        state.total_steps = (int64_t) o.tokens.size() / window;

        llama_model_ptr model = LoadWritableModel(o.model_path, /*require_f32 =*/ true, error);
        if (!model) return;
        const llama_vocab * vocab = llama_model_get_vocab(model.get());
        const int32_t n_vocab = llama_vocab_n_tokens(vocab);
        for (int32_t t : o.tokens) {
            if (t < 0 || t >= n_vocab) { error = "token id " + std::to_string(t) + " is outside the model's vocabulary of " + std::to_string(n_vocab); return; }
        }
        ContextOptions co;
        co.n_ctx = (uint32_t) o.n_ctx;
        co.n_batch = (uint32_t) o.n_ctx;   // one window per ubatch: see the K/V patch and training-notes.md
        co.threads = o.threads;
        co.cb_eval = TrainEvalCallback;
        co.cb_eval_user_data = &state;
        llama_context_ptr ctx = NewContext(model.get(), co, error);
        if (!ctx) return;
        // llama.cpp rounds n_ctx up (to a multiple of 256); opt_epoch sizes its samples with the rounded value.
        if ((int) llama_n_ctx(ctx.get()) != o.n_ctx) {
            error = "nCtx " + std::to_string(o.n_ctx) + " was rounded to " + std::to_string(llama_n_ctx(ctx.get())) + " by llama.cpp; use a multiple of 256";
            return;
        }

        // One decode installs the eval callback in the scheduler and shows us token_embd's GET_ROWS.
        {
            std::vector<llama_token> probe(o.tokens.begin(), o.tokens.begin() + std::min<int64_t>(8, o.n_ctx));
            llama_batch batch = llama_batch_get_one(probe.data(), (int32_t) probe.size());
            if (llama_decode(ctx.get(), batch) != 0) { error = "the first decode of the training context failed"; return; }
            llama_memory_clear(llama_get_memory(ctx.get()), true);
        }
        // Fix 3: opt_init leaves token_embd out (a FIXME upstream); make it a parameter first.
        if (state.token_embd) ggml_set_param(state.token_embd);

        llama_opt_params op{};
        op.n_ctx_train = 0;
        op.param_filter = llama_opt_param_filter_all;
        op.param_filter_ud = nullptr;
        op.get_opt_pars = TrainOptimizerParams;
        op.get_opt_pars_ud = &state;
        op.optimizer_type = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
        llama_opt_init(ctx.get(), model.get(), op);

        g_epoch_state = &state;
        state.started = std::chrono::steady_clock::now();
        std::unique_ptr<ggml_opt_result, OptResultDeleter> result(ggml_opt_result_init());
        double last_loss = NAN;
        for (int64_t first = 0; first < state.total_steps; first += o.chunk_windows) {
            const int64_t n = std::min<int64_t>(o.chunk_windows, state.total_steps - first);
            std::unique_ptr<ggml_opt_dataset, OptDatasetDeleter> dataset(
                ggml_opt_dataset_init(GGML_TYPE_I32, GGML_TYPE_I32, o.n_ctx, o.n_ctx, n, /*ndata_shard =*/ 1));
            auto * data = (int32_t *) ggml_opt_dataset_data(dataset.get())->data;
            auto * labels = (int32_t *) ggml_opt_dataset_labels(dataset.get())->data;
            for (int64_t i = 0; i < n; i++) {
                const int32_t * w = o.tokens.data() + (first + i) * window;
                memcpy(data + i * o.n_ctx, w, o.n_ctx * sizeof(int32_t));
                memcpy(labels + i * o.n_ctx, w + 1, o.n_ctx * sizeof(int32_t));
            }
            llama_opt_epoch(ctx.get(), dataset.get(), result.get(), nullptr, /*idata_split =*/ n, TrainEpochCallback, nullptr);
            if (state.steps_done != first + n) { error = "llama_opt_epoch stopped early (see MATHNEURO_LLAMA_LOG=1)"; return; }
            for (const TrainProgress & p : state.pending) { last_loss = p.loss; progress.Send(&p, 1); }
            state.pending.clear();
        }
        g_epoch_state = nullptr;
        seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - state.started).count();
        result_steps_ = state.steps_done;
        final_loss_ = last_loss;
        n_params_ = llama_model_n_params(model.get());
        n_trained_tensors_ = (int64_t) state.gradients.size();
        const std::string saved = o.output_path + ".llama-save.tmp";
        llama_model_save_to_file(model.get(), saved.c_str());
        const bool ok = WriteWithMetadataOf(o.model_path, saved, o.output_path, error);
        std::remove(saved.c_str());
        if (!ok) return;
    }

    TrainOptions options_;
    Napi::FunctionReference on_progress_;
    int64_t result_steps_ = 0;
    double seconds_ = 0;
    double final_loss_ = NAN;
    uint64_t n_params_ = 0;
    int64_t n_trained_tensors_ = 0;
};

// trainModel(options, onProgress?): Promise<TrainResult>. See src/fixture/train.ts for the options.
Napi::Value TrainModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!BackendReady()) ThrowCoded(env, "ENOBACKEND", "native backend not initialized");
    if (info.Length() < 1 || !info[0].IsObject()) ThrowCoded(env, "EUSAGE", "trainModel(options, onProgress?) needs an options object");
    if (g_training_busy) ThrowCoded(env, "EBUSY", "a training run is already in progress in this process");
    Napi::Object in = info[0].As<Napi::Object>();
    TrainOptions o;
    o.model_path = RequireString(in.Get("modelPath"), "modelPath");
    o.output_path = RequireString(in.Get("outputPath"), "outputPath");
    o.n_ctx = IntOption(in, "nCtx", 256, 8, 1 << 16);
    o.threads = IntOption(in, "threads", 2, 1, 512);
    o.learning_rate = NumberOption(in, "learningRate", o.learning_rate, 0, 1);
    o.min_learning_rate = NumberOption(in, "minLearningRate", o.min_learning_rate, 0, 1);
    o.warmup_steps = IntOption(in, "warmupSteps", o.warmup_steps, 1, 1 << 30);
    o.beta1 = NumberOption(in, "beta1", o.beta1, 0, 0.999999);
    o.beta2 = NumberOption(in, "beta2", o.beta2, 0, 0.999999);
    o.eps = NumberOption(in, "eps", o.eps, 0, 1);
    o.weight_decay = NumberOption(in, "weightDecay", o.weight_decay, 0, 1);
    o.report_every = IntOption(in, "reportEvery", o.report_every, 1, 1 << 30);
    o.chunk_windows = IntOption(in, "chunkWindows", o.chunk_windows, 1, 1 << 20);
    Napi::Value tv = in.Get("tokens");
    if (!tv.IsTypedArray() || tv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        ThrowCoded(env, "EUSAGE", "tokens must be an Int32Array of nWindows x (nCtx + 1) token ids");
    }
    Napi::Int32Array tokens = tv.As<Napi::Int32Array>();
    const size_t window = (size_t) o.n_ctx + 1;
    if (tokens.ElementLength() == 0 || tokens.ElementLength() % window != 0) {
        ThrowCoded(env, "EUSAGE", "tokens must hold a whole number (>= 1) of windows of nCtx + 1 = " + std::to_string(window) + " tokens");
    }
    o.tokens.assign(tokens.Data(), tokens.Data() + tokens.ElementLength());
    Napi::Function on_progress;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
        if (!info[1].IsFunction()) ThrowCoded(env, "EUSAGE", "onProgress must be a function");
        on_progress = info[1].As<Napi::Function>();
    }
    auto * w = new TrainWorker(env, std::move(o), on_progress);
    g_training_busy = true;
    return w->Start();
}

// ---------------------------------------------------------------------------------------------
// GGUF writer for a fresh model: metadata entries and F32 tensors, all given by the caller.

void SetMetadata(Napi::Env env, gguf_context * g, const Napi::Object & entry) {
    std::string key = RequireString(entry.Get("key"), "metadata key");
    std::string type = RequireString(entry.Get("type"), "metadata type");
    Napi::Value v = entry.Get("value");
    auto number = [&](const Napi::Value & x) {
        if (!x.IsNumber()) ThrowCoded(env, "EUSAGE", "metadata " + key + " needs numbers");
        return x.As<Napi::Number>().DoubleValue();
    };
    auto array = [&]() {
        if (!v.IsArray()) ThrowCoded(env, "EUSAGE", "metadata " + key + " needs an array");
        return v.As<Napi::Array>();
    };
    if (type == "string") gguf_set_val_str(g, key.c_str(), RequireString(v, key.c_str()).c_str());
    else if (type == "u32") {
        double d = number(v);
        if (d < 0 || d > 4294967295.0 || d != std::floor(d)) ThrowCoded(env, "EUSAGE", "metadata " + key + " is not a u32");
        gguf_set_val_u32(g, key.c_str(), (uint32_t) d);
    } else if (type == "i32") {
        double d = number(v);
        if (d < -2147483648.0 || d > 2147483647.0 || d != std::floor(d)) ThrowCoded(env, "EUSAGE", "metadata " + key + " is not an i32");
        gguf_set_val_i32(g, key.c_str(), (int32_t) d);
    } else if (type == "f32") gguf_set_val_f32(g, key.c_str(), (float) number(v));
    else if (type == "bool") {
        if (!v.IsBoolean()) ThrowCoded(env, "EUSAGE", "metadata " + key + " needs a boolean");
        gguf_set_val_bool(g, key.c_str(), v.As<Napi::Boolean>().Value());
    } else if (type == "string[]") {
        std::vector<std::string> s = RequireStringArray(v, key.c_str());
        std::vector<const char *> p;
        for (auto & x : s) p.push_back(x.c_str());
        gguf_set_arr_str(g, key.c_str(), p.data(), p.size());
    } else if (type == "f32[]") {
        Napi::Array a = array();
        std::vector<float> x(a.Length());
        for (uint32_t i = 0; i < a.Length(); i++) x[i] = (float) number(a.Get(i));
        gguf_set_arr_data(g, key.c_str(), GGUF_TYPE_FLOAT32, x.data(), x.size());
    } else if (type == "i32[]") {
        Napi::Array a = array();
        std::vector<int32_t> x(a.Length());
        for (uint32_t i = 0; i < a.Length(); i++) x[i] = (int32_t) number(a.Get(i));
        gguf_set_arr_data(g, key.c_str(), GGUF_TYPE_INT32, x.data(), x.size());
    } else {
        ThrowCoded(env, "EUSAGE", "metadata type must be string, u32, i32, f32, bool, string[], f32[] or i32[], not " + type);
    }
}

// writeF32Gguf(path, metadata: {key, type, value}[], tensors: {name, shape: number[], data: Float32Array}[]): void
// shape is in ggml order (ne[0] first, the contiguous dimension).
Napi::Value WriteF32Gguf(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsArray()) ThrowCoded(env, "EUSAGE", "writeF32Gguf(path, metadata[], tensors[])");
    std::string path = RequireString(info[0], "path");
    Napi::Array metadata = info[1].As<Napi::Array>();
    Napi::Array tensors = info[2].As<Napi::Array>();
    gguf_context_ptr g(gguf_init_empty());
    for (uint32_t i = 0; i < metadata.Length(); i++) {
        if (!metadata.Get(i).IsObject()) ThrowCoded(env, "EUSAGE", "metadata entries must be objects");
        SetMetadata(env, g.get(), metadata.Get(i).As<Napi::Object>());
    }
    ggml_init_params ip = { /*mem_size =*/ (tensors.Length() + 1) * ggml_tensor_overhead(), /*mem_buffer =*/ nullptr, /*no_alloc =*/ true };
    ggml_context_ptr ctx(ggml_init(ip));
    std::set<std::string> names;
    for (uint32_t i = 0; i < tensors.Length(); i++) {
        if (!tensors.Get(i).IsObject()) ThrowCoded(env, "EUSAGE", "tensors must be objects");
        Napi::Object t = tensors.Get(i).As<Napi::Object>();
        std::string name = RequireString(t.Get("name"), "tensor name");
        if (name.empty() || name.size() >= GGML_MAX_NAME) ThrowCoded(env, "EUSAGE", "tensor name must have 1 to " + std::to_string(GGML_MAX_NAME - 1) + " characters");
        if (!names.insert(name).second) ThrowCoded(env, "EUSAGE", "duplicate tensor " + name);
        if (!t.Get("shape").IsArray()) ThrowCoded(env, "EUSAGE", "tensor " + name + " needs a shape array");
        Napi::Array shape = t.Get("shape").As<Napi::Array>();
        if (shape.Length() < 1 || shape.Length() > GGML_MAX_DIMS) ThrowCoded(env, "EUSAGE", "tensor " + name + " needs 1 to 4 dimensions");
        int64_t ne[GGML_MAX_DIMS] = {1, 1, 1, 1};
        double numel = 1;
        for (uint32_t d = 0; d < shape.Length(); d++) {
            Napi::Value x = shape.Get(d);
            double v = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
            if (!(v >= 1 && v <= 1e12 && v == std::floor(v))) ThrowCoded(env, "EUSAGE", "tensor " + name + " has a bad dimension");
            ne[d] = (int64_t) v;
            numel *= v;
        }
        Napi::Value dv = t.Get("data");
        if (!dv.IsTypedArray() || dv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) ThrowCoded(env, "EUSAGE", "tensor " + name + " data must be a Float32Array");
        Napi::Float32Array data = dv.As<Napi::Float32Array>();
        if ((double) data.ElementLength() != numel) ThrowCoded(env, "EUSAGE", "tensor " + name + " data has " + std::to_string(data.ElementLength()) + " values, its shape needs " + std::to_string((int64_t) numel));
        ggml_tensor * tensor = ggml_new_tensor(ctx.get(), GGML_TYPE_F32, (int) shape.Length(), ne);
        ggml_set_name(tensor, name.c_str());
        tensor->data = data.Data();   // read by gguf_write_to_file below, while the JS array is alive
        gguf_add_tensor(g.get(), tensor);
    }
    if (!gguf_write_to_file(g.get(), path.c_str(), /*only_meta =*/ false)) ThrowCoded(env, "EIO", "could not write " + path);
    return env.Undefined();
}

// copyWithMetadataOf(metadataFrom, tensorsFrom, out): out = metadataFrom's keys and tensor order with
// tensorsFrom's tensor data (same names and types). Repairs a file llama_model_save_to_file wrote.
Napi::Value CopyWithMetadataOf(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::string metadata_from = RequireString(info[0], "metadataFrom");
    std::string tensors_from = RequireString(info[1], "tensorsFrom");
    std::string out = RequireString(info[2], "out");
    std::string error;
    if (!CheckGguf(metadata_from, false, error) || !CheckGguf(tensors_from, false, error)) ThrowCoded(env, "EUSAGE", error);
    if (!WriteWithMetadataOf(metadata_from, tensors_from, out, error)) ThrowCoded(env, "EIO", error);
    return env.Undefined();
}

} // namespace

void RegisterTrain(Napi::Env env, Napi::Object exports) {
    exports.Set("trainModel", Napi::Function::New(env, Export<TrainModel>));
    exports.Set("writeF32Gguf", Napi::Function::New(env, Export<WriteF32Gguf>));
    exports.Set("copyWithMetadataOf", Napi::Function::New(env, Export<CopyWithMetadataOf>));
}
