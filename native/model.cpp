// The model the statistics are collected with: loadModel() opens a GGUF (every shard) with a
// llama.cpp context whose eval callback is the Collector (collector.cpp), and the N-API class Model
// runs its forward passes off the JS thread: collect(), logits(), tokenize(), info().
#include "common.h"
#include "collector.h"
#include "llama_util.h"
#include "llama-cpp.h"
#include "ggml-cpp.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

// tune (src/tune): llama.cpp's own table of a model's weights, exported by libllama (src/llama-model.h)
const std::vector<std::pair<std::string, ggml_tensor *>> & llama_internal_get_tensor_map(const llama_model * model);

namespace {

struct ModelHandle {
    std::unique_ptr<Collector> collector;
    std::atomic<bool> abort_flag{false};
    std::atomic<bool> busy{false};
    int32_t n_ctx = 0;
    int32_t n_batch = 0;
    int32_t n_seq_max = 1;          // > 1: several short samples may share one forward pass
    bool use_mmap = true;           // the weights lie in a read-only mapping of the file (setWeight refuses)
    // last, so freed first: the context (whose callbacks point at the collector) before the model
    llama_model_ptr model;
    llama_context_ptr ctx;
};

struct LoadOptions {
    std::string path;
    int32_t n_gpu_layers = 0;
    int32_t n_threads = 0;
    int32_t n_ctx = 2048;
    int32_t n_batch = 512;
    int32_t n_seq_max = 16;
    bool use_mmap = true;
    int32_t flash_attn = -1;        // llama_flash_attn_type: -1 auto, 0 off, 1 on
    bool kv_f32 = false;            // F32 KV cache instead of llama.cpp's default F16
    bool repack = true;             // false: no CPU extra buffer types (repacked weights), the trainer's layout
    bool kv_unified = true;         // false (one sequence only): llama.cpp's default K/V layout, as the trainer's context has it
};

// Everything a model load needs, done off the JS thread.
static std::unique_ptr<ModelHandle> load_model(const LoadOptions & o, std::string & error) {
    auto h = std::make_unique<ModelHandle>();
    h->collector = std::make_unique<Collector>();

    // the weight names and input widths, read from the GGUF itself: from every shard of a split
    // model, found as llama.cpp's loader finds them (llama_split_prefix, llama_split_path)
    std::vector<std::string> files = { o.path };
    for (size_t f = 0; f < files.size(); ++f) {
        ggml_context * meta_raw = nullptr;
        gguf_init_params gp = { /*no_alloc*/ true, &meta_raw };
        gguf_context_ptr gguf(gguf_init_from_file(files[f].c_str(), gp));
        ggml_context_ptr meta(meta_raw);
        gguf_context * g = gguf.get();
        if (!g) { error = "not a readable GGUF file: " + files[f]; return nullptr; }
        const int64_t split_key = f == 0 ? gguf_find_key(g, "split.count") : -1;
        const int n_split = split_key >= 0 && gguf_get_kv_type(g, split_key) == GGUF_TYPE_UINT16 ? gguf_get_val_u16(g, split_key) : 1;
        if (n_split > 1) {
            std::vector<char> buf(o.path.size() + 64, 0);
            const int len = llama_split_prefix(buf.data(), buf.size(), o.path.c_str(), 0, n_split);
            const std::string prefix(buf.data(), len > 0 ? len : 0);
            for (int i = 1; len > 0 && i < n_split; ++i) {
                if (llama_split_path(buf.data(), buf.size(), prefix.c_str(), i, n_split) > 0) files.emplace_back(buf.data());
            }
        }
        for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
            const char * name = gguf_get_tensor_name(g, i);
            ggml_tensor * t = ggml_get_tensor(meta.get(), name);
            if (!t) continue;
            WeightShape ws;
            ws.n_in = t->ne[0];
            ws.n_mat = t->ne[2];
            h->collector->weights[name] = ws;
        }
    }

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = o.n_gpu_layers;
    mp.load_mode = o.use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    mp.use_extra_bufts = o.repack;
    {
        LlamaLogCapture log;
        h->model.reset(llama_model_load_from_file(o.path.c_str(), mp));
        if (!h->model) {
            const std::string why = log.reason();
            error = "llama.cpp could not load the model: " + o.path + (why.empty() ? "" : ": " + why);
            return nullptr;
        }
    }

    llama_context_params cp = llama_context_default_params();
    const int32_t n_ctx_train = llama_model_n_ctx_train(h->model.get());
    cp.n_ctx = (uint32_t) std::max<int32_t>(8, (n_ctx_train > 0 ? std::min(o.n_ctx, n_ctx_train) : o.n_ctx));
    cp.n_batch = (uint32_t) std::max<int32_t>(1, std::min<int32_t>(o.n_batch, cp.n_ctx));
    cp.n_ubatch = cp.n_batch;      // one llama_decode is one graph evaluation
    // packing needs a transformer KV cache that keeps batch order (unified); recurrent models run one sample at a time
    const bool can_pack = o.n_seq_max > 1 && !llama_model_is_recurrent(h->model.get()) && !llama_model_is_hybrid(h->model.get());
    cp.n_seq_max = can_pack ? (uint32_t) std::min(o.n_seq_max, 256) : 1;
    cp.kv_unified = o.kv_unified || cp.n_seq_max > 1;
    if (o.n_threads > 0) { cp.n_threads = o.n_threads; cp.n_threads_batch = o.n_threads; }
    cp.flash_attn_type = (llama_flash_attn_type) o.flash_attn;
    if (o.kv_f32) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; }
    cp.cb_eval = CollectorEvalCallback;
    cp.cb_eval_user_data = h->collector.get();
    cp.abort_callback = CollectorAbortCallback;
    cp.abort_callback_data = h->collector.get();
    cp.no_perf = true;
    h->collector->abort_flag = &h->abort_flag;
    h->ctx.reset(llama_init_from_model(h->model.get(), cp));
    if (!h->ctx) { error = "llama.cpp could not create a context for " + o.path; return nullptr; }
    h->n_ctx = (int32_t) llama_n_ctx(h->ctx.get());
    h->n_batch = (int32_t) llama_n_batch(h->ctx.get());
    h->n_seq_max = (int32_t) llama_n_seq_max(h->ctx.get());
    h->use_mmap = o.use_mmap;
    return h;
}

class Model;

struct Progress {
    int64_t samples_done;
    int64_t tokens_done;
    double elapsed_ms;
};

// A worker that runs forward passes on the model's one context. While it runs the model is busy
// (the methods refuse a second pass); once it settles, either way, the model is free again and a
// pending abort is spent. Finish() rejects the promise when the pass failed (error_ "aborted":
// EABORT, otherwise EDECODE) and says whether to resolve. PlainPass() turns the statistics off and
// clears any stop node, so every node of the graph runs and the logits can be read; EndPass()
// turns the statistics back on.
template <class Base>
class ModelPassWorker : public PromiseWorker<Base> {
public:
    ModelPassWorker(Napi::Env env, Napi::Object model_ref, ModelHandle * h) : PromiseWorker<Base>(env), h_(h) { this->Keep(model_ref); }
    void OnError(const Napi::Error & e) override { Release(); this->Reject(e.Value()); }
protected:
    bool Finish() {
        Release();
        if (error_.empty()) return true;
        this->RejectCoded(error_ == "aborted" ? "EABORT" : "EDECODE", error_);
        return false;
    }
    // one llama_decode; on failure error_ says why
    bool Decode(llama_batch & batch) {
        const int32_t rc = llama_decode(h_->ctx.get(), batch);
        if (rc != 0) error_ = h_->abort_flag.load() ? "aborted" : "llama_decode failed with code " + std::to_string(rc);
        return rc == 0;
    }
    void PlainPass() {
        Collector & c = *h_->collector;
        c.enabled = false;
        c.stop_after.clear();
        c.stopped = false;
    }
    void EndPass() { h_->collector->enabled = true; }
    ModelHandle * h_;
    std::string error_;
private:
    void Release() { h_->busy = false; h_->abort_flag = false; }
};

// Collect statistics for a list of texts. Runs on a libuv worker: no N-API in here.
class CollectWorker : public ModelPassWorker<Napi::AsyncProgressQueueWorker<Progress>> {
public:
    CollectWorker(Napi::Env env, Napi::Object model_ref, ModelHandle * h, std::vector<std::string> texts,
                  Napi::Function progress, bool add_special, bool pack, bool collect_stats, bool logits_all, std::string stop_after)
        : ModelPassWorker(env, model_ref, h), texts_(std::move(texts)), add_special_(add_special),
          pack_(pack), collect_stats_(collect_stats), logits_all_(logits_all), stop_after_(std::move(stop_after)) {
        if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
    }

    void Execute(const ExecutionProgress & progress) override {
        Collector & c = *h_->collector;
        c.stats.clear();
        c.matmuls_seen.clear();
        c.error.clear();
        c.enabled = collect_stats_;
        c.segments.clear();
        // the logits of a stopped graph are garbage: nothing here reads them (LogitsWorker clears this)
        c.stop_after = stop_after_;
        c.stopped = false;
        c.stops = 0;
        c.observe_ms = 0;
        const llama_vocab * vocab = llama_model_get_vocab(h_->model.get());
        llama_memory_t mem = llama_get_memory(h_->ctx.get());
        llama_batch batch = llama_batch_init(h_->n_batch, 0, 1);
        auto t0 = std::chrono::steady_clock::now();
        std::unordered_map<std::string, std::vector<double>> saved_counts;
        int64_t decodes = 0;
        auto fail = [&](int32_t rc, size_t si) {
            if (h_->abort_flag.load()) aborted_ = true;
            else if (!c.error.empty()) error_ = c.error;
            else error_ = "llama_decode failed with code " + std::to_string(rc) + " on sample " + std::to_string(si);
        };
        auto report = [&]() {
            Progress p{ samples_, tokens_, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() };
            progress.Send(&p, 1);
        };
        // tokenize lazily, one sample ahead, so packing can look at the next sample's length
        std::vector<llama_token> next;
        size_t next_index = 0;
        auto fetch = [&](size_t si, std::vector<llama_token> & out) -> bool {
            out = Tokenize(vocab, texts_[si], add_special_);
            if (out.empty()) { empty_.push_back((int64_t) si); return false; }
            if ((int32_t) out.size() > h_->n_ctx) {
                out.resize(h_->n_ctx);
                truncated_.push_back((int64_t) si);
            }
            return true;
        };
        size_t si = 0;
        while (si < texts_.size()) {
            if (h_->abort_flag.load()) { aborted_ = true; break; }
            std::vector<llama_token> tokens;
            if (next_index == si && !next.empty()) { tokens.swap(next); }
            else if (!fetch(si, tokens)) { si++; continue; }
            next.clear();

            const bool packable = pack_ && h_->n_seq_max > 1 && (int32_t) tokens.size() <= h_->n_batch;
            if (packable) {
                // gather whole samples into one forward pass, one sequence each
                std::vector<std::vector<llama_token>> group;
                std::vector<size_t> group_index;
                int64_t total = (int64_t) tokens.size();
                group.push_back(std::move(tokens));
                group_index.push_back(si);
                size_t sj = si + 1;
                while (sj < texts_.size() && (int32_t) group.size() < h_->n_seq_max) {
                    std::vector<llama_token> cand;
                    if (!fetch(sj, cand)) { sj++; continue; }
                    if (total + (int64_t) cand.size() > h_->n_batch) { next.swap(cand); next_index = sj; break; }
                    total += (int64_t) cand.size();
                    group.push_back(std::move(cand));
                    group_index.push_back(sj);
                    sj++;
                }
                llama_memory_clear(mem, true);
                c.snapshot_counts(saved_counts);
                c.segments.clear();
                int32_t n = 0;
                for (size_t g = 0; g < group.size(); ++g) {
                    c.segments.push_back({ n, (int64_t) group[g].size() });
                    for (size_t i = 0; i < group[g].size(); ++i, ++n) {
                        batch.token[n] = group[g][i];
                        batch.pos[n] = (llama_pos) i;
                        batch.n_seq_id[n] = 1;
                        batch.seq_id[n][0] = (llama_seq_id) g;
                        batch.logits[n] = logits_all_ || i + 1 == group[g].size();
                    }
                }
                batch.n_tokens = n;
                c.packed_rows = n;
                c.generation++;
                c.stopped = false;
                const int32_t rc = llama_decode(h_->ctx.get(), batch);
                decodes++;
                c.segments.clear();
                // the scheduler stops a graph whose callback said no, but llama_decode may still return 0
                if (rc != 0 || !c.error.empty()) {
                    fail(rc, group_index.front());
                    c.discard_sample();
                    c.restore_counts(saved_counts);
                    break;
                }
                c.end_packed();
                samples_ += (int64_t) group.size();
                tokens_ += total;
                report();
                si = sj;
                continue;
            }

            llama_memory_clear(mem, true);
            c.snapshot_counts(saved_counts);
            bool ok = true;
            for (size_t pos = 0; pos < tokens.size(); pos += h_->n_batch) {
                const int32_t n = (int32_t) std::min<size_t>(h_->n_batch, tokens.size() - pos);
                // every token's logits: the last layer and the head see all tokens
                FillSequenceBatch(batch, tokens, pos, n, logits_all_);
                c.generation++;
                c.stopped = false;
                const int32_t rc = llama_decode(h_->ctx.get(), batch);
                decodes++;
                if (rc != 0 || !c.error.empty()) { ok = false; fail(rc, si); break; }
            }
            if (!ok) {
                c.discard_sample();
                c.restore_counts(saved_counts);
                break;
            }
            c.end_sample();
            samples_++;
            tokens_ += (int64_t) tokens.size();
            report();
            si++;
        }
        llama_batch_free(batch);
        llama_memory_clear(mem, true);
        c.enabled = true;
        c.stop_after.clear();
        c.stopped = false;
        stops_ = c.stops;
        decodes_ = decodes;
        observe_ms_ = c.observe_ms;
        elapsed_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }

    void OnProgress(const Progress * data, size_t count) override {
        if (progress_.IsEmpty() || count == 0) return;
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        const Progress & p = data[count - 1];
        Napi::Object o = Napi::Object::New(env);
        o.Set("samplesDone", (double) p.samples_done);
        o.Set("tokensDone", (double) p.tokens_done);
        o.Set("elapsedMs", p.elapsed_ms);
        progress_.Call({ o });
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        if (!Finish()) return;
        Napi::Object out = Napi::Object::New(env);
        out.Set("samples", (double) samples_);
        out.Set("tokens", (double) tokens_);
        out.Set("elapsedMs", elapsed_ms_);
        out.Set("aborted", aborted_);
        // forward passes, how many of them ended at the stop node, and the time inside the statistics
        out.Set("decodes", (double) decodes_);
        out.Set("stopped", (double) stops_);
        out.Set("observeMs", observe_ms_);
        Napi::Array trunc = Napi::Array::New(env, truncated_.size());
        for (size_t i = 0; i < truncated_.size(); ++i) trunc.Set((uint32_t) i, (double) truncated_[i]);
        out.Set("truncated", trunc);
        Napi::Array empty = Napi::Array::New(env, empty_.size());
        for (size_t i = 0; i < empty_.size(); ++i) empty.Set((uint32_t) i, (double) empty_[i]);
        out.Set("empty", empty);
        Napi::Array weights = Napi::Array::New(env);
        for (auto & kv : h_->collector->stats) {
            const Stats & s = kv.second;
            Napi::Object w = Napi::Object::New(env);
            w.Set("name", kv.first);
            w.Set("nIn", (double) s.n_in);
            w.Set("nMat", (double) s.n_mat);
            w.Set("sum2", ToJsArray<Napi::Float64Array>(env, s.sum2));
            w.Set("normSum", ToJsArray<Napi::Float64Array>(env, s.norm_sum));
            w.Set("counts", ToJsArray<Napi::Float64Array>(env, s.counts));
            weights.Set(weights.Length(), w);
        }
        out.Set("weights", weights);
        h_->collector->stats.clear();
        if (h_->collector->record_matmuls) {
            // { name: src0 name, op: 'MUL_MAT' | 'MUL_MAT_ID', accepted: statistics were collected for it }
            Napi::Array seen = Napi::Array::New(env);
            for (auto & kv : h_->collector->matmuls_seen) {
                Napi::Object m = Napi::Object::New(env);
                m.Set("name", kv.first);
                m.Set("op", kv.second.first == (int) GGML_OP_MUL_MAT_ID ? "MUL_MAT_ID" : "MUL_MAT");
                m.Set("accepted", kv.second.second);
                seen.Set(seen.Length(), m);
            }
            out.Set("matmuls", seen);
            h_->collector->matmuls_seen.clear();
            h_->collector->record_matmuls = false;
        }
        Resolve(out);
    }

private:
    std::vector<std::string> texts_;
    bool add_special_;
    bool pack_;
    bool collect_stats_;
    bool logits_all_;
    std::string stop_after_;
    Napi::FunctionReference progress_;
    int64_t decodes_ = 0;
    int64_t stops_ = 0;
    double observe_ms_ = 0;
    int64_t samples_ = 0;
    int64_t tokens_ = 0;
    double elapsed_ms_ = 0;
    bool aborted_ = false;
    std::vector<int64_t> truncated_;
    std::vector<int64_t> empty_;
};

// Logits of every position of one token sequence (plain forward pass, no statistics): for
// evaluation (KL of a patched model against its source) through the same llama.cpp build.
class LogitsWorker : public ModelPassWorker<Napi::AsyncWorker> {
public:
    // out: a caller's Float32Array of at least tokens x n_vocab values, written in place (reused across
    // calls: a fresh 66 MB buffer per prompt cost a page fault and a clear per 4 KiB); empty: our own
    LogitsWorker(Napi::Env env, Napi::Object model_ref, ModelHandle * h, std::vector<llama_token> tokens, Napi::Float32Array out)
        : ModelPassWorker(env, model_ref, h), tokens_(std::move(tokens)) {
        if (!out.IsEmpty()) { out_ref_ = Napi::Persistent(out); dst_ = out.Data(); }   // the reference keeps it alive
    }
    void Execute() override {
        PlainPass();   // every node, the head included: these logits are read
        const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(h_->model.get()));
        n_vocab_ = n_vocab;
        llama_memory_t mem = llama_get_memory(h_->ctx.get());
        llama_memory_clear(mem, true);
        llama_batch batch = llama_batch_init(h_->n_batch, 0, 1);
        if (!dst_) { out_.resize(tokens_.size() * (size_t) n_vocab); dst_ = out_.data(); }
        for (size_t pos = 0; pos < tokens_.size() && error_.empty(); pos += h_->n_batch) {
            const int32_t n = (int32_t) std::min<size_t>(h_->n_batch, tokens_.size() - pos);
            FillSequenceBatch(batch, tokens_, pos, n, /*logits_all*/ true);
            if (!Decode(batch)) break;
            for (int32_t i = 0; i < n; ++i) {
                const float * l = llama_get_logits_ith(h_->ctx.get(), i);
                if (!l) { error_ = "no logits for position " + std::to_string(pos + i); break; }
                memcpy(dst_ + (pos + i) * (size_t) n_vocab, l, sizeof(float) * n_vocab);
            }
        }
        llama_batch_free(batch);
        llama_memory_clear(mem, true);
        EndPass();
    }
    void OnOK() override {
        Napi::Env env = Env();
        if (!Finish()) return;
        Napi::Object o = Napi::Object::New(env);
        const size_t n_values = tokens_.size() * (size_t) n_vocab_;
        if (!out_ref_.IsEmpty()) {
            // a view of the caller's buffer: its first tokens x n_vocab values
            Napi::Float32Array given = out_ref_.Value().As<Napi::Float32Array>();
            o.Set("logits", Napi::Float32Array::New(env, n_values, given.ArrayBuffer(), given.ByteOffset()));
        } else {
            // the worker's buffer itself, not a copy (128 positions x a 128k vocabulary are 66 MB): JS frees it
            auto * rows = new std::vector<float>(std::move(out_));
            Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, rows->data(), rows->size() * sizeof(float),
                [](Napi::Env, void *, std::vector<float> * v) { delete v; }, rows);
            o.Set("logits", Napi::Float32Array::New(env, rows->size(), buf, 0));
        }
        o.Set("nVocab", n_vocab_);
        o.Set("nTokens", (double) tokens_.size());
        Resolve(o);
    }
private:
    std::vector<llama_token> tokens_;
    std::vector<float> out_;
    Napi::Reference<Napi::Float32Array> out_ref_;
    float * dst_ = nullptr;
    int32_t n_vocab_ = 0;
};

// Greedy completion of one prompt (plain forward passes, no statistics): the prompt in batches of
// n_batch with the last token's logits, then one token at a time; argmax of the raw logits (ties:
// the lowest id). Ends at an end-of-generation token (not counted), when the text of the pieces
// holds a stop string (cut there), or after max_new tokens.
class GreedyWorker : public ModelPassWorker<Napi::AsyncWorker> {
public:
    GreedyWorker(Napi::Env env, Napi::Object model_ref, ModelHandle * h, std::vector<llama_token> tokens, int32_t max_new, std::vector<std::string> stops)
        : ModelPassWorker(env, model_ref, h), tokens_(std::move(tokens)), max_new_(max_new), stops_(std::move(stops)) {}
    void Execute() override {
        PlainPass();
        Run();
        llama_memory_clear(llama_get_memory(h_->ctx.get()), true);
        EndPass();
    }
    void OnOK() override {
        Napi::Env env = Env();
        if (!Finish()) return;
        Napi::Object o = Napi::Object::New(env);
        o.Set("text", text_);
        o.Set("tokens", ToJsArray<Napi::Int32Array>(env, generated_));
        o.Set("stoppedBy", stopped_by_);
        Resolve(o);
    }
private:
    void Run() {
        const llama_vocab * vocab = llama_model_get_vocab(h_->model.get());
        const int32_t n_vocab = llama_vocab_n_tokens(vocab);
        llama_memory_clear(llama_get_memory(h_->ctx.get()), true);
        llama_batch batch = llama_batch_init(h_->n_batch, 0, 1);
        bool ok = true;
        for (size_t pos = 0; pos < tokens_.size() && ok; pos += h_->n_batch) {
            const int32_t n = (int32_t) std::min<size_t>(h_->n_batch, tokens_.size() - pos);
            FillSequenceBatch(batch, tokens_, pos, n, /*logits_all*/ false);
            ok = Decode(batch);
        }
        std::string text;
        for (int32_t k = 0; ok && k < max_new_; ++k) {
            const float * logits = llama_get_logits_ith(h_->ctx.get(), -1);
            if (!logits) { error_ = "no logits after the prompt"; break; }
            llama_token best = 0;
            for (int32_t v = 1; v < n_vocab; ++v) if (logits[v] > logits[best]) best = v;
            if (llama_vocab_is_eog(vocab, best)) { stopped_by_ = "eog"; break; }
            generated_.push_back(best);
            char buf[256];
            const int32_t len = llama_token_to_piece(vocab, best, buf, sizeof(buf), 0, false);
            if (len > 0) text += std::string(buf, len);
            size_t cut = std::string::npos;
            for (const std::string & s : stops_) {
                const size_t at = s.empty() ? std::string::npos : text.find(s);
                if (at != std::string::npos && (cut == std::string::npos || at < cut)) cut = at;
            }
            if (cut != std::string::npos) { text.resize(cut); stopped_by_ = "stop-string"; break; }
            if (k + 1 == max_new_) { stopped_by_ = "max-tokens"; break; }
            const size_t n_past = tokens_.size() + generated_.size() - 1;
            if ((int64_t) n_past + 1 > h_->n_ctx) { stopped_by_ = "max-tokens"; break; }
            batch.n_tokens = 1;
            batch.token[0] = best;
            batch.pos[0] = (llama_pos) n_past;
            batch.n_seq_id[0] = 1;
            batch.seq_id[0][0] = 0;
            batch.logits[0] = true;
            ok = Decode(batch);
        }
        text_ = text;
        llama_batch_free(batch);
    }
    std::vector<llama_token> tokens_;
    int32_t max_new_;
    std::vector<std::string> stops_;
    std::vector<llama_token> generated_;
    std::string text_;
    std::string stopped_by_ = "eog";
};

class Model : public Napi::ObjectWrap<Model> {
public:
    static Napi::FunctionReference constructor;

    static Napi::Function Define(Napi::Env env) {
        return DefineClass(env, "Model", {
            InstanceMethod("tokenize", &Model::Tokenize),
            InstanceMethod("collect", &Model::Collect),
            InstanceMethod("logits", &Model::Logits),
            InstanceMethod("greedy", &Model::Greedy),
            InstanceMethod("abort", &Model::Abort),
            InstanceMethod("info", &Model::Info),
            InstanceMethod("dispose", &Model::Dispose),
            InstanceMethod("weightInfo", &Model::WeightInfo),
            InstanceMethod("setWeight", &Model::SetWeight),
            InstanceMethod("getWeight", &Model::GetWeight),
        });
    }

    explicit Model(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Model>(info) {
        if (info.Length() < 1 || !info[0].IsExternal()) ThrowCoded(info.Env(), "EUSAGE", "use loadModel() to open a model");
        handle_.reset(info[0].As<Napi::External<ModelHandle>>().Data());
    }

    ModelHandle * handle(Napi::Env env) {
        if (!handle_) ThrowCoded(env, "EDISPOSED", "the model was disposed");
        return handle_.get();
    }

private:
    std::unique_ptr<ModelHandle> handle_;

    Napi::Value Tokenize(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        if (info.Length() < 1 || !info[0].IsString()) ThrowCoded(env, "EUSAGE", "tokenize(text: string, addSpecial?: boolean)");
        const bool add_special = BoolArgument(info, 1, true);
        std::vector<llama_token> toks = ::Tokenize(llama_model_get_vocab(h->model.get()), info[0].As<Napi::String>().Utf8Value(), add_special);
        return ToJsArray<Napi::Int32Array>(env, toks);
    }

    // collect(texts: string[], onProgress?: (p) => void, addSpecial = true, options?): Promise<RawStats>
    Napi::Value Collect(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        if (info.Length() < 1 || !info[0].IsArray()) ThrowCoded(env, "EUSAGE", "collect(texts: string[], onProgress?)");
        if (h->busy.exchange(true)) ThrowCoded(env, "EBUSY", "a collection is already running on this model");
        Napi::Array arr = info[0].As<Napi::Array>();
        std::vector<std::string> texts;
        texts.reserve(arr.Length());
        for (uint32_t i = 0; i < arr.Length(); ++i) {
            Napi::Value v = arr.Get(i);
            if (!v.IsString()) { h->busy = false; ThrowCoded(env, "EUSAGE", "collect(): texts[" + std::to_string(i) + "] is not a string"); }
            texts.push_back(v.As<Napi::String>().Utf8Value());
        }
        Napi::Function progress;
        if (info.Length() > 1 && info[1].IsFunction()) progress = info[1].As<Napi::Function>();
        const bool add_special = BoolArgument(info, 2, true);
        // options: { pack = true, stats = true (false: plain forward passes), logits = "all" | "last",
        //            stopAfter: a node name: each graph evaluation ends after it (later nodes, e.g. the
        //            output head, are not computed; the logits are then never read) }
        bool pack = true, collect_stats = true, logits_all = true, record_matmuls = false;
        std::string stop_after;
        if (info.Length() > 3 && info[3].IsObject()) {
            Napi::Object o = info[3].As<Napi::Object>();
            if (o.Get("matmuls").IsBoolean()) record_matmuls = o.Get("matmuls").As<Napi::Boolean>().Value();
            if (o.Get("pack").IsBoolean()) pack = o.Get("pack").As<Napi::Boolean>().Value();
            if (o.Get("stats").IsBoolean()) collect_stats = o.Get("stats").As<Napi::Boolean>().Value();
            if (o.Get("logits").IsString()) logits_all = o.Get("logits").As<Napi::String>().Utf8Value() != "last";
            if (o.Get("stopAfter").IsString()) stop_after = o.Get("stopAfter").As<Napi::String>().Utf8Value();
        }
        if (collect_stats && !logits_all) { h->busy = false; ThrowCoded(env, "EUSAGE", "statistics need logits for every token"); }
        h->abort_flag = false;
        h->collector->record_matmuls = record_matmuls;
        auto * w = new CollectWorker(env, Value(), h, std::move(texts), progress, add_special, pack, collect_stats, logits_all, std::move(stop_after));
        return w->Start();
    }

    // logits(tokens: Int32Array, out?: Float32Array): Promise<{ logits: Float32Array (nTokens x nVocab), nVocab, nTokens }>
    // With out (at least nTokens x nVocab values; left alone until the promise settles), the logits are
    // written into it and `logits` is a view of its start.
    Napi::Value Logits(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) ThrowCoded(env, "EUSAGE", "logits(tokens: Int32Array)");
        Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
        const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(h->model.get()));
        if (arr.ElementLength() == 0) ThrowCoded(env, "EUSAGE", "logits(): no tokens");
        if ((int64_t) arr.ElementLength() > h->n_ctx) ThrowCoded(env, "EUSAGE", "logits(): " + std::to_string(arr.ElementLength()) + " tokens exceed the context of " + std::to_string(h->n_ctx));
        std::vector<llama_token> tokens(arr.Data(), arr.Data() + arr.ElementLength());
        for (llama_token t : tokens) if (t < 0 || t >= n_vocab) ThrowCoded(env, "EUSAGE", "logits(): token id " + std::to_string(t) + " is outside the vocabulary");
        Napi::Float32Array out;
        if (info.Length() > 1 && !info[1].IsUndefined()) {
            if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) ThrowCoded(env, "EUSAGE", "logits(): out must be a Float32Array");
            out = info[1].As<Napi::Float32Array>();
            if (out.ElementLength() / (size_t) n_vocab < tokens.size()) ThrowCoded(env, "EUSAGE", "logits(): out holds " + std::to_string(out.ElementLength()) + " values, fewer than " + std::to_string(tokens.size()) + " tokens x " + std::to_string(n_vocab));
        }
        if (h->busy.exchange(true)) ThrowCoded(env, "EBUSY", "the model is busy");
        auto * w = new LogitsWorker(env, Value(), h, std::move(tokens), out);
        return w->Start();
    }

    // greedy(tokens: Int32Array, maxNewTokens: number, stops: string[]): Promise<{ text, tokens: Int32Array, stoppedBy }>
    Napi::Value Greedy(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        const char * usage = "greedy(tokens: Int32Array, maxNewTokens: number, stops: string[])";
        if (info.Length() < 3 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array || !info[1].IsNumber()) ThrowCoded(env, "EUSAGE", usage);
        Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
        const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(h->model.get()));
        const int32_t max_new = info[1].As<Napi::Number>().Int32Value();
        if (arr.ElementLength() == 0) ThrowCoded(env, "EUSAGE", "greedy(): no prompt tokens");
        if (max_new < 1) ThrowCoded(env, "EUSAGE", "greedy(): maxNewTokens must be at least 1");
        if ((int64_t) arr.ElementLength() + max_new > h->n_ctx) ThrowCoded(env, "EUSAGE", "greedy(): " + std::to_string(arr.ElementLength()) + " prompt tokens + " + std::to_string(max_new) + " new ones do not fit the context of " + std::to_string(h->n_ctx));
        std::vector<llama_token> tokens(arr.Data(), arr.Data() + arr.ElementLength());
        for (llama_token t : tokens) if (t < 0 || t >= n_vocab) ThrowCoded(env, "EUSAGE", "greedy(): token id " + std::to_string(t) + " is outside the vocabulary");
        std::vector<std::string> stops = RequireStringArray(info[2], "stops");
        if (h->busy.exchange(true)) ThrowCoded(env, "EBUSY", "the model is busy");
        auto * w = new GreedyWorker(env, Value(), h, std::move(tokens), max_new, std::move(stops));
        return w->Start();
    }

    Napi::Value Abort(const Napi::CallbackInfo & info) {
        if (handle_) handle_->abort_flag = true;
        return info.Env().Undefined();
    }

    Napi::Value Info(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        Napi::Object o = Napi::Object::New(env);
        const llama_vocab * vocab = llama_model_get_vocab(h->model.get());
        o.Set("nCtx", h->n_ctx);
        o.Set("nBatch", h->n_batch);
        o.Set("nSeqMax", h->n_seq_max);
        o.Set("nCtxTrain", llama_model_n_ctx_train(h->model.get()));
        o.Set("nEmbd", llama_model_n_embd(h->model.get()));
        o.Set("nLayer", llama_model_n_layer(h->model.get()));
        o.Set("nVocab", llama_vocab_n_tokens(vocab));
        o.Set("addBos", llama_vocab_get_add_bos(vocab));
        o.Set("bos", llama_vocab_bos(vocab));
        o.Set("nParams", (double) llama_model_n_params(h->model.get()));
        o.Set("sizeBytes", (double) llama_model_size(h->model.get()));
        char desc[256];
        llama_model_desc(h->model.get(), desc, sizeof(desc));
        o.Set("description", desc);
        o.Set("weightCount", (double) h->collector->weights.size());
        return o;
    }

    // ---- tune (src/tune/model.ts): a loaded model's weights, read and written in place ----------
    // Every candidate of `mathneuro tune` is scored by writing its patched bytes over the weights
    // of one loaded model (no file, no reload) and setting the original bytes back afterwards.
    // Whole tensors only (the CPU repack buffers accept nothing else and repack on set); checked
    // here so that no ggml assertion can reach the process.

    ggml_tensor * FindWeight(Napi::Env env, ModelHandle * h, const Napi::CallbackInfo & info, const char * usage) {
        if (info.Length() < 1 || !info[0].IsString()) ThrowCoded(env, "EUSAGE", usage);
        const std::string name = info[0].As<Napi::String>().Utf8Value();
        for (const auto & kv : llama_internal_get_tensor_map(h->model.get())) {
            if (kv.first == name) {
                ggml_tensor * t = kv.second;
                ggml_backend_buffer_t buf = t && t->view_src ? t->view_src->buffer : t ? t->buffer : nullptr;
                if (!t || !buf || !t->data) ThrowCoded(env, "EUSAGE", "weight " + name + " has no data in a backend buffer");
                return t;
            }
        }
        ThrowCoded(env, "ENOENT", "the loaded model has no weight named " + name);
    }

    // weightInfo(name): { name, type, nbytes, ne: number[4], buffer: string, host: boolean, writable: boolean }
    Napi::Value WeightInfo(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        ggml_tensor * t = FindWeight(env, h, info, "weightInfo(name: string)");
        ggml_backend_buffer_t buf = t->view_src ? t->view_src->buffer : t->buffer;
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", ggml_get_name(t));
        o.Set("type", (double) t->type);
        o.Set("nbytes", (double) ggml_nbytes(t));
        Napi::Array ne = Napi::Array::New(env, GGML_MAX_DIMS);
        for (uint32_t d = 0; d < GGML_MAX_DIMS; ++d) ne.Set(d, (double) t->ne[d]);
        o.Set("ne", ne);
        o.Set("buffer", ggml_backend_buffer_name(buf));
        o.Set("host", ggml_backend_buffer_is_host(buf));
        o.Set("writable", !h->use_mmap);
        return o;
    }

    // setWeight(name, bytes: Uint8Array): the whole tensor's bytes in its stored type (the GGUF's layout)
    Napi::Value SetWeight(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        ggml_tensor * t = FindWeight(env, h, info, "setWeight(name: string, bytes: Uint8Array)");
        if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) ThrowCoded(env, "EUSAGE", "setWeight(name: string, bytes: Uint8Array)");
        if (h->use_mmap) ThrowCoded(env, "EMMAP", "the model was loaded with mmap: its weights are a read-only mapping of the file; load it with useMmap: false to change them in memory");
        Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
        if (bytes.ByteLength() != ggml_nbytes(t)) ThrowCoded(env, "EUSAGE", std::string("setWeight(") + ggml_get_name(t) + "): " + std::to_string(bytes.ByteLength()) + " bytes, the tensor has " + std::to_string(ggml_nbytes(t)) + " (whole tensors only)");
        if (h->busy.exchange(true)) ThrowCoded(env, "EBUSY", "the model is busy");
        ggml_backend_tensor_set(t, bytes.Data(), 0, ggml_nbytes(t));
        h->busy = false;
        return env.Undefined();
    }

    // getWeight(name): Uint8Array of the tensor's bytes (host buffers only: a repacked CPU buffer keeps another layout)
    Napi::Value GetWeight(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        ModelHandle * h = handle(env);
        ggml_tensor * t = FindWeight(env, h, info, "getWeight(name: string)");
        ggml_backend_buffer_t buf = t->view_src ? t->view_src->buffer : t->buffer;
        if (!ggml_backend_buffer_is_host(buf)) ThrowCoded(env, "EUNSUPPORTED", std::string("getWeight(") + ggml_get_name(t) + "): its buffer (" + ggml_backend_buffer_name(buf) + ") is not host memory in the file's layout");
        Napi::Uint8Array out = Napi::Uint8Array::New(env, ggml_nbytes(t));
        memcpy(out.Data(), t->data, ggml_nbytes(t));
        return out;
    }

    Napi::Value Dispose(const Napi::CallbackInfo & info) {
        if (handle_ && handle_->busy.load()) ThrowCoded(info.Env(), "EBUSY", "cannot dispose while a collection is running; abort it first");
        handle_.reset();
        return info.Env().Undefined();
    }
};

Napi::FunctionReference Model::constructor;

class LoadWorker : public PromiseWorker<Napi::AsyncWorker> {
public:
    LoadWorker(Napi::Env env, LoadOptions o) : PromiseWorker(env), o_(std::move(o)) {}
    void Execute() override { h_ = load_model(o_, error_); }
    void OnOK() override {
        if (!h_) { RejectCoded("ELOAD", error_); return; }
        Resolve(Model::constructor.New({ Napi::External<ModelHandle>::New(Env(), h_.release()) }));
    }
private:
    LoadOptions o_;
    std::unique_ptr<ModelHandle> h_;
    std::string error_;
};

// loadModel(path, { nGpuLayers, nThreads, nCtx, nBatch, useMmap }): Promise<Model>
static Napi::Value LoadModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!BackendReady()) ThrowCoded(env, "ENOBACKEND", "call init() first");
    if (info.Length() < 1 || !info[0].IsString()) ThrowCoded(env, "EUSAGE", "loadModel(path: string, options?)");
    LoadOptions o;
    o.path = info[0].As<Napi::String>().Utf8Value();
    if (info.Length() > 1 && info[1].IsObject()) {
        Napi::Object opt = info[1].As<Napi::Object>();
        auto num = [&](const char * k, int32_t & dst) { if (opt.Has(k) && opt.Get(k).IsNumber()) dst = opt.Get(k).As<Napi::Number>().Int32Value(); };
        num("nGpuLayers", o.n_gpu_layers);
        num("nThreads", o.n_threads);
        num("nCtx", o.n_ctx);
        num("nBatch", o.n_batch);
        num("nSeqMax", o.n_seq_max);
        if (opt.Has("useMmap") && opt.Get("useMmap").IsBoolean()) o.use_mmap = opt.Get("useMmap").As<Napi::Boolean>().Value();
        if (opt.Has("repack") && opt.Get("repack").IsBoolean()) o.repack = opt.Get("repack").As<Napi::Boolean>().Value();
        if (opt.Has("kvUnified") && opt.Get("kvUnified").IsBoolean()) o.kv_unified = opt.Get("kvUnified").As<Napi::Boolean>().Value();
        if (opt.Get("flashAttn").IsString()) {
            const std::string fa = opt.Get("flashAttn").As<Napi::String>().Utf8Value();
            if (fa == "auto") o.flash_attn = -1; else if (fa == "on") o.flash_attn = 1; else if (fa == "off") o.flash_attn = 0;
            else ThrowCoded(env, "EUSAGE", "flashAttn must be auto, on or off");
        }
        if (opt.Get("kvType").IsString()) {
            const std::string kv = opt.Get("kvType").As<Napi::String>().Utf8Value();
            if (kv == "f32") o.kv_f32 = true; else if (kv != "f16") ThrowCoded(env, "EUSAGE", "kvType must be f16 or f32");
        }
    }
    if (o.n_ctx < 1 || o.n_batch < 1) ThrowCoded(env, "EUSAGE", "nCtx and nBatch must be positive");
    if (o.n_seq_max < 1 || o.n_seq_max > 256) ThrowCoded(env, "EUSAGE", "nSeqMax must be 1..256");
    return (new LoadWorker(env, o))->Start();
}

} // namespace

void RegisterCollector(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = Model::Define(env);
    Model::constructor = Napi::Persistent(ctor);
    Model::constructor.SuppressDestruct();
    exports.Set("Model", ctor);
    exports.Set("loadModel", Napi::Function::New(env, LoadModel));
}
