// The tensor codec: type information, dequantization and quantization through ggml's own type
// traits, the exact top-K selection of one tensor's scores, and the requantization of the blocks
// that hold selected weights. No policy here: the caller decides K, the scale and what to write.
#include "common.h"
#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// An error that reaches JS as MathneuroError(code, message).
struct CodedError : std::runtime_error {
    std::string code;
    CodedError(const char * c, const std::string & m) : std::runtime_error(m), code(c) {}
};

// ---------------------------------------------------------------------------------------------
// Types

bool valid_type(int64_t t) {
    if (t < 0 || t >= GGML_TYPE_COUNT) return false;
    const ggml_type_traits * tr = ggml_get_type_traits((ggml_type) t);
    return tr && tr->blck_size > 0 && tr->type_size > 0 && tr->type_name;
}

// The types ggml_quantize_chunk knows (it asserts on any other).
bool can_quantize(ggml_type t) {
    switch (t) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_MXFP4: case GGML_TYPE_NVFP4: case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0:
        case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S:
        case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
            return true;
        default:
            return false;
    }
}

bool can_dequantize(ggml_type t) {
    if (t == GGML_TYPE_F32) return true;
    const ggml_type_traits * tr = ggml_get_type_traits(t);
    return tr->to_float != nullptr;
}

// Types whose ggml quantizer reads an importance matrix (quant_weights) when given one.
bool uses_imatrix(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S:
        case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
            return true;
        default:
            return false;
    }
}

ggml_type checked_type(int64_t t) {
    if (!valid_type(t)) throw CodedError("EQUANT", "unknown ggml type id " + std::to_string(t));
    return (ggml_type) t;
}

std::string type_name(ggml_type t) { return ggml_type_name(t); }

size_t bytes_for(ggml_type t, int64_t n) {
    const int64_t bs = ggml_blck_size(t);
    if (n % bs != 0) throw CodedError("EUSAGE", std::to_string(n) + " elements is not a whole number of " + type_name(t) + " blocks of " + std::to_string(bs));
    return (size_t) (n / bs) * ggml_type_size(t);
}

void dequantize_into(ggml_type t, const uint8_t * src, float * dst, int64_t n) {
    if (!can_dequantize(t)) throw CodedError("EQUANT", "ggml cannot dequantize " + type_name(t));
    if (t == GGML_TYPE_F32) { memcpy(dst, src, (size_t) n * sizeof(float)); return; }
    ggml_get_type_traits(t)->to_float(src, dst, n);
}

// ---------------------------------------------------------------------------------------------
// Keep-scale re-rounding: a weight of these formats is a * q + b with an integer code q in
// [qmin, qmax] and (a, b) fixed by the block's scales. Changing only the codes of selected weights
// leaves every other weight of the block bit-identical.

struct CodeSlot { float a; float b; int qmin; int qmax; int q; };

float h2f(const uint8_t * p) { ggml_fp16_t h; memcpy(&h, p, 2); return ggml_fp16_to_fp32(h); }

void scale_min_k4(int j, const uint8_t * q, uint8_t * d, uint8_t * m) {
    if (j < 4) { *d = q[j] & 63; *m = q[j + 4] & 63; }
    else { *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4); }
}

bool keep_scale_supported(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
            return true;
        default: return false;
    }
}

// Reads the slot of weight p (0 <= p < block size) of one block.
CodeSlot read_slot(ggml_type t, const uint8_t * b, int p) {
    CodeSlot s{};
    switch (t) {
        case GGML_TYPE_Q8_0: {
            s.a = h2f(b); s.b = 0; s.qmin = -128; s.qmax = 127; s.q = (int8_t) b[2 + p];
        } break;
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: {
            const bool one = t == GGML_TYPE_Q4_1;
            const uint8_t * qs = b + (one ? 4 : 2);
            const float d = h2f(b);
            s.q = p < 16 ? (qs[p] & 0xF) : (qs[p - 16] >> 4);
            s.qmin = 0; s.qmax = 15;
            if (one) { s.a = d; s.b = h2f(b + 2); } else { s.a = d; s.b = 0; s.q -= 8; s.qmin = -8; s.qmax = 7; }
        } break;
        case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: {
            const bool one = t == GGML_TYPE_Q5_1;
            const uint8_t * qhp = b + (one ? 4 : 2);
            const uint8_t * qs = qhp + 4;
            uint32_t qh; memcpy(&qh, qhp, 4);
            const float d = h2f(b);
            int low = p < 16 ? (qs[p] & 0xF) : (qs[p - 16] >> 4);
            s.q = low | (((qh >> p) & 1) << 4);
            s.qmin = 0; s.qmax = 31;
            if (one) { s.a = d; s.b = h2f(b + 2); } else { s.a = d; s.b = 0; s.q -= 16; s.qmin = -16; s.qmax = 15; }
        } break;
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: {
            const bool five = t == GGML_TYPE_Q5_K;
            const float d = h2f(b), dmin = h2f(b + 2);
            const uint8_t * scales = b + 4;
            const uint8_t * qh = b + 16;
            const uint8_t * qs = five ? b + 48 : b + 16;
            const int j64 = p / 64, sub = (p % 64) / 32, l = p % 32, is = 2 * j64 + sub;
            uint8_t sc, m; scale_min_k4(is, scales, &sc, &m);
            const uint8_t byte = qs[j64 * 32 + l];
            s.q = sub == 0 ? (byte & 0xF) : (byte >> 4);
            if (five && (qh[l] & (1u << is))) s.q += 16;
            s.a = d * sc; s.b = -(dmin * m); s.qmin = 0; s.qmax = five ? 31 : 15;
        } break;
        case GGML_TYPE_Q6_K: {
            const uint8_t * ql = b, * qh = b + 128; const int8_t * sc = (const int8_t *) (b + 192);
            const float d = h2f(b + 208);
            const int h = p / 128, r = p % 128, g = r / 32, l = r % 32;
            const uint8_t lowb = ql[h * 64 + l + ((g & 1) ? 32 : 0)];
            const int low = g < 2 ? (lowb & 0xF) : (lowb >> 4);
            const int high = (qh[h * 32 + l] >> (2 * g)) & 3;
            s.q = (low | (high << 4)) - 32; s.qmin = -32; s.qmax = 31;
            s.a = d * sc[h * 8 + l / 16 + 2 * g]; s.b = 0;
        } break;
        default: throw CodedError("EQUANT", "keep-scale re-rounding does not support " + type_name(t));
    }
    return s;
}

void write_code(ggml_type t, uint8_t * b, int p, int q) {
    switch (t) {
        case GGML_TYPE_Q8_0: b[2 + p] = (uint8_t) (int8_t) q; break;
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: {
            const bool one = t == GGML_TYPE_Q4_1;
            uint8_t * qs = b + (one ? 4 : 2);
            const int u = one ? q : q + 8;
            if (p < 16) qs[p] = (qs[p] & 0xF0) | (u & 0xF); else qs[p - 16] = (qs[p - 16] & 0x0F) | ((u & 0xF) << 4);
        } break;
        case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: {
            const bool one = t == GGML_TYPE_Q5_1;
            uint8_t * qhp = b + (one ? 4 : 2);
            uint8_t * qs = qhp + 4;
            const int u = one ? q : q + 16;
            if (p < 16) qs[p] = (qs[p] & 0xF0) | (u & 0xF); else qs[p - 16] = (qs[p - 16] & 0x0F) | ((u & 0xF) << 4);
            uint32_t qh; memcpy(&qh, qhp, 4);
            qh = (qh & ~(1u << p)) | ((uint32_t) ((u >> 4) & 1) << p);
            memcpy(qhp, &qh, 4);
        } break;
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: {
            const bool five = t == GGML_TYPE_Q5_K;
            uint8_t * qh = b + 16;
            uint8_t * qs = five ? b + 48 : b + 16;
            const int j64 = p / 64, sub = (p % 64) / 32, l = p % 32, is = 2 * j64 + sub;
            uint8_t & byte = qs[j64 * 32 + l];
            if (sub == 0) byte = (byte & 0xF0) | (q & 0xF); else byte = (byte & 0x0F) | ((q & 0xF) << 4);
            if (five) qh[l] = (qh[l] & ~(1u << is)) | (((q >> 4) & 1) << is);
        } break;
        case GGML_TYPE_Q6_K: {
            uint8_t * ql = b, * qh = b + 128;
            const int u = q + 32;
            const int h = p / 128, r = p % 128, g = r / 32, l = r % 32;
            uint8_t & lowb = ql[h * 64 + l + ((g & 1) ? 32 : 0)];
            if (g < 2) lowb = (lowb & 0xF0) | (u & 0xF); else lowb = (lowb & 0x0F) | ((u & 0xF) << 4);
            uint8_t & hb = qh[h * 32 + l];
            hb = (hb & ~(3u << (2 * g))) | (((u >> 4) & 3) << (2 * g));
        } break;
        default: throw CodedError("EQUANT", "keep-scale re-rounding does not support " + type_name(t));
    }
}

// ---------------------------------------------------------------------------------------------
// Exact top-K of one group of scores. Scores are non-negative doubles, so their IEEE bits order
// like the values: a radix select on the bits finds the k-th largest exactly without sorting
// and without storing the scores. Only positive scores are eligible (a zero score contributes
// nothing). Ties at the threshold go to the lower flat index.

struct ScoreSource {
    const float * w;          // dequantized weights of the tensor
    const double * col;       // column weights, nIn per matrix
    int64_t n_in;
    int64_t per_matrix;       // nIn * rows
    inline uint64_t key(int64_t i) const {
        const int64_t m = i / per_matrix;
        const double s = std::fabs((double) w[i]) * col[m * n_in + i % n_in];
        if (!(s > 0)) return 0;     // zero, negative zero and NaN: not eligible
        uint64_t k; memcpy(&k, &s, 8);
        return k;
    }
};

// Marks the top k of [begin, begin+len) in mask (bit i of the tensor).
void mark_top(const ScoreSource & src, int64_t begin, int64_t len, const std::vector<int64_t> & ks,
              std::vector<std::vector<uint8_t>> & masks, int64_t radix_min_group,
              std::vector<uint64_t> & scratch, std::vector<uint64_t> & hist) {
    auto set_bit = [](std::vector<uint8_t> & m, int64_t i) { m[i >> 3] |= (uint8_t) (1u << (i & 7)); };
    // Threshold for each k: (T, ties to take). T = 0 with take = -1 means "all eligible".
    std::vector<uint64_t> thresholds(ks.size(), 0);
    std::vector<int64_t> take(ks.size(), 0);
    int64_t eligible = 0;
    const bool radix = len >= radix_min_group;
    if (!radix) {
        scratch.clear();
        for (int64_t i = begin; i < begin + len; i++) { uint64_t k = src.key(i); if (k) scratch.push_back(k); }
        eligible = (int64_t) scratch.size();
        for (size_t q = 0; q < ks.size(); q++) {
            const int64_t k = ks[q];
            if (k <= 0) { take[q] = -2; continue; }
            if (k >= eligible) { take[q] = -1; continue; }
            std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<uint64_t>());
            const uint64_t T = scratch[k - 1];
            int64_t greater = 0;
            for (uint64_t v : scratch) greater += v > T;
            thresholds[q] = T; take[q] = k - greater;
        }
    } else {
        hist.assign(65536, 0);
        for (int64_t i = begin; i < begin + len; i++) { uint64_t k = src.key(i); if (k) { hist[k >> 48]++; eligible++; } }
        const std::vector<uint64_t> top = hist;
        for (size_t q = 0; q < ks.size(); q++) {
            const int64_t k = ks[q];
            if (k <= 0) { take[q] = -2; continue; }
            if (k >= eligible) { take[q] = -1; continue; }
            uint64_t prefix = 0, prefix_mask = 0; int64_t remaining = k;
            for (int digit = 3; digit >= 0; digit--) {
                const int shift = digit * 16;
                if (digit == 3) hist = top;
                else {
                    std::fill(hist.begin(), hist.end(), 0);
                    for (int64_t i = begin; i < begin + len; i++) {
                        uint64_t key = src.key(i);
                        if (key && (key & prefix_mask) == prefix) hist[(key >> shift) & 0xFFFF]++;
                    }
                }
                int64_t cum = 0; int b = 65535;
                for (; b > 0; b--) { if (cum + (int64_t) hist[b] >= remaining) break; cum += (int64_t) hist[b]; }
                remaining -= cum;
                prefix |= (uint64_t) b << shift;
                prefix_mask |= (uint64_t) 0xFFFF << shift;
            }
            thresholds[q] = prefix; take[q] = remaining;
        }
    }
    for (size_t q = 0; q < ks.size(); q++) {
        if (take[q] == -2) continue;
        std::vector<uint8_t> & m = masks[q];
        const uint64_t T = thresholds[q];
        int64_t ties = take[q];
        for (int64_t i = begin; i < begin + len; i++) {
            const uint64_t key = src.key(i);
            if (!key) continue;
            if (take[q] == -1 || key > T) set_bit(m, i);
            else if (key == T && ties > 0) { set_bit(m, i); ties--; }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// N-API helpers

int64_t get_int(const Napi::Object & o, const char * key, int64_t min_value = 0) {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) throw CodedError("EUSAGE", std::string(key) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < (double) min_value || d > 9007199254740991.0)
        throw CodedError("EUSAGE", std::string(key) + " must be an integer >= " + std::to_string(min_value));
    return (int64_t) d;
}

template <typename T>
Napi::TypedArrayOf<T> get_array(const Napi::Value & v, const char * what) {
    if (!v.IsTypedArray()) throw CodedError("EUSAGE", std::string(what) + " must be a typed array");
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    napi_typedarray_type want = napi_uint8_array;
    if (std::is_same<T, float>::value) want = napi_float32_array;
    else if (std::is_same<T, double>::value) want = napi_float64_array;
    if (ta.TypedArrayType() != want && !(want == napi_uint8_array && ta.TypedArrayType() == napi_uint8_clamped_array))
        throw CodedError("EUSAGE", std::string(what) + " has the wrong element type");
    return v.As<Napi::TypedArrayOf<T>>();
}

Napi::Uint8Array to_js_bytes(Napi::Env env, const std::vector<uint8_t> & v) {
    Napi::Uint8Array out = Napi::Uint8Array::New(env, v.size());
    if (!v.empty()) memcpy(out.Data(), v.data(), v.size());
    return out;
}

Napi::Float32Array to_js_floats(Napi::Env env, const std::vector<float> & v) {
    Napi::Float32Array out = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) memcpy(out.Data(), v.data(), v.size() * sizeof(float));
    return out;
}

Napi::Error coded(Napi::Env env, const CodedError & e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, e.code));
    return err;
}

// Runs work() on a libuv thread and settles a promise with done(env); keeps the inputs alive.
class TaskWorker : public Napi::AsyncWorker {
public:
    TaskWorker(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
        : Napi::AsyncWorker(env), work_(std::move(work)), done_(std::move(done)), deferred_(Napi::Promise::Deferred::New(env)) {}
    void Keep(const Napi::Value & v) { if (v.IsObject()) keep_.push_back(Napi::Persistent(v.As<Napi::Object>())); }
    Napi::Promise Promise() { return deferred_.Promise(); }
protected:
    void Execute() override {
        try { work_(); }
        catch (const CodedError & e) { code_ = e.code; SetError(e.what()); }
        catch (const std::bad_alloc &) { code_ = "EIO"; SetError("out of memory"); }
        catch (const std::exception & e) { code_ = "EIO"; SetError(e.what()); }
    }
    void OnOK() override {
        Napi::HandleScope scope(Env());
        try { deferred_.Resolve(done_(Env())); }
        catch (const Napi::Error & e) { deferred_.Reject(e.Value()); }
    }
    void OnError(const Napi::Error & e) override {
        Napi::HandleScope scope(Env());
        Napi::Error err = Napi::Error::New(Env(), e.Message());
        err.Set("code", Napi::String::New(Env(), code_.empty() ? "EIO" : code_));
        deferred_.Reject(err.Value());
    }
private:
    std::function<void()> work_;
    std::function<Napi::Value(Napi::Env)> done_;
    Napi::Promise::Deferred deferred_;
    std::vector<Napi::ObjectReference> keep_;
    std::string code_;
};

#define CODEC_TRY try {
#define CODEC_CATCH(env) } catch (const CodedError & e) { throw coded(env, e); }

// ---------------------------------------------------------------------------------------------
// Exports

// codecTypeInfo(type): { id, name, blockSize, typeSize, isQuantized, canDequantize, canQuantize,
// requiresImatrix, usesImatrix, keepScale } or null for an id that names no type.
Napi::Value TypeInfo(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowCoded(env, "EUSAGE", "codecTypeInfo(type): type must be a number");
    const int64_t id = info[0].As<Napi::Number>().Int64Value();
    if (!valid_type(id)) return env.Null();
    const ggml_type t = (ggml_type) id;
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", (double) id);
    o.Set("name", type_name(t));
    o.Set("blockSize", (double) ggml_blck_size(t));
    o.Set("typeSize", (double) ggml_type_size(t));
    o.Set("isQuantized", ggml_is_quantized(t));
    o.Set("canDequantize", can_dequantize(t));
    o.Set("canQuantize", can_quantize(t));
    o.Set("requiresImatrix", can_quantize(t) && ggml_quantize_requires_imatrix(t));
    o.Set("usesImatrix", uses_imatrix(t));
    o.Set("keepScale", keep_scale_supported(t));
    return o;
}

// dequantize(type, bytes: Uint8Array, nElements): Float32Array
Napi::Value Dequantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    CODEC_TRY
    if (info.Length() < 3 || !info[0].IsNumber() || !info[2].IsNumber()) throw CodedError("EUSAGE", "dequantize(type, bytes, nElements)");
    const ggml_type t = checked_type(info[0].As<Napi::Number>().Int64Value());
    auto bytes = get_array<uint8_t>(info[1], "bytes");
    const double nd = info[2].As<Napi::Number>().DoubleValue();
    if (!(nd >= 0) || nd != std::floor(nd)) throw CodedError("EUSAGE", "nElements must be a non-negative integer");
    const int64_t n = (int64_t) nd;
    if (bytes.ByteLength() != bytes_for(t, n)) throw CodedError("EUSAGE", "dequantize: " + std::to_string(bytes.ByteLength()) + " bytes do not hold " + std::to_string(n) + " " + type_name(t) + " elements");
    Napi::Float32Array out = Napi::Float32Array::New(env, (size_t) n);
    if (n) dequantize_into(t, bytes.Data(), out.Data(), n);
    return out;
    CODEC_CATCH(env)
}

// quantize(type, values: Float32Array, nPerRow, imatrix?: Float32Array | null): Uint8Array
Napi::Value Quantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    CODEC_TRY
    if (info.Length() < 3 || !info[0].IsNumber() || !info[2].IsNumber()) throw CodedError("EUSAGE", "quantize(type, values, nPerRow, imatrix?)");
    const ggml_type t = checked_type(info[0].As<Napi::Number>().Int64Value());
    if (!can_quantize(t)) throw CodedError("EQUANT", "ggml cannot quantize to " + type_name(t));
    auto values = get_array<float>(info[1], "values");
    const int64_t n = (int64_t) values.ElementLength();
    const int64_t per_row = info[2].As<Napi::Number>().Int64Value();
    if (per_row <= 0 || n % per_row != 0) throw CodedError("EUSAGE", "nPerRow must divide the number of values");
    if (per_row % ggml_blck_size(t) != 0) throw CodedError("EUSAGE", "a row of " + std::to_string(per_row) + " is not a whole number of " + type_name(t) + " blocks");
    const float * imatrix = nullptr;
    if (info.Length() > 3 && !info[3].IsNull() && !info[3].IsUndefined()) {
        auto im = get_array<float>(info[3], "imatrix");
        if ((int64_t) im.ElementLength() != per_row) throw CodedError("EUSAGE", "imatrix must hold nPerRow values");
        imatrix = im.Data();
    }
    if (imatrix == nullptr && ggml_quantize_requires_imatrix(t)) throw CodedError("EQUANT", type_name(t) + " needs an importance matrix to be quantized");
    const size_t size = bytes_for(t, n);
    Napi::Uint8Array out = Napi::Uint8Array::New(env, size);
    if (n) ggml_quantize_chunk(t, values.Data(), out.Data(), 0, n / per_row, per_row, imatrix);
    return out;
    CODEC_CATCH(env)
}

// selectTopK({ type, data, nIn, rows, matrices, colWeights: Float64Array[], groupBy: 'matrix'|'row',
//              counts: number[], radixMinGroup? }): Promise<Uint8Array[][]>  (masks[set][count])
// Each mask has one bit per weight (bit i of byte i>>3 is flat index i).
Napi::Value SelectTopK(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    CODEC_TRY
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("EUSAGE", "selectTopK(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    const ggml_type t = checked_type(get_int(o, "type"));
    if (!can_dequantize(t)) throw CodedError("EQUANT", "ggml cannot dequantize " + type_name(t));
    auto data = get_array<uint8_t>(o.Get("data"), "data");
    const int64_t n_in = get_int(o, "nIn", 1), rows = get_int(o, "rows", 1), mats = get_int(o, "matrices", 1);
    const int64_t numel = n_in * rows * mats;
    if (n_in % ggml_blck_size(t) != 0) throw CodedError("EUSAGE", "nIn is not a whole number of " + type_name(t) + " blocks");
    if (data.ByteLength() != bytes_for(t, numel)) throw CodedError("EUSAGE", "data holds " + std::to_string(data.ByteLength()) + " bytes, not the size of a " + type_name(t) + " tensor of " + std::to_string(numel) + " elements");
    Napi::Value cw = o.Get("colWeights");
    if (!cw.IsArray()) throw CodedError("EUSAGE", "colWeights must be an array of Float64Array");
    Napi::Array cwa = cw.As<Napi::Array>();
    std::vector<const double *> cols;
    for (uint32_t i = 0; i < cwa.Length(); i++) {
        auto a = get_array<double>(cwa.Get(i), "colWeights[i]");
        if ((int64_t) a.ElementLength() != n_in * mats) throw CodedError("EUSAGE", "colWeights[" + std::to_string(i) + "] must hold nIn * matrices values");
        cols.push_back(a.Data());
    }
    std::string group_by = o.Get("groupBy").IsString() ? o.Get("groupBy").As<Napi::String>().Utf8Value() : "matrix";
    if (group_by != "matrix" && group_by != "row") throw CodedError("EUSAGE", "groupBy must be 'matrix' or 'row'");
    const int64_t group = group_by == "row" ? n_in : n_in * rows;
    Napi::Value cv = o.Get("counts");
    if (!cv.IsArray()) throw CodedError("EUSAGE", "counts must be an array of integers");
    std::vector<int64_t> ks;
    Napi::Array ca = cv.As<Napi::Array>();
    for (uint32_t i = 0; i < ca.Length(); i++) {
        Napi::Value v = ca.Get(i);
        double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
        if (!(d >= 0) || d != std::floor(d) || d > (double) group) throw CodedError("EUSAGE", "counts must be integers in [0, group size]");
        ks.push_back((int64_t) d);
    }
    int64_t radix_min = 1 << 20;
    if (o.Has("radixMinGroup") && !o.Get("radixMinGroup").IsUndefined()) radix_min = get_int(o, "radixMinGroup", 1);

    auto result = std::make_shared<std::vector<std::vector<std::vector<uint8_t>>>>();
    const uint8_t * bytes = data.Data();
    auto * w = new TaskWorker(env,
        [=]() {
            std::vector<float> dequant;
            const float * wf = (const float *) bytes;
            if (t != GGML_TYPE_F32 || ((uintptr_t) bytes % alignof(float)) != 0) {
                dequant.resize((size_t) numel);
                dequantize_into(t, bytes, dequant.data(), numel);
                wf = dequant.data();
            }
            std::vector<uint64_t> scratch; std::vector<uint64_t> hist;
            result->resize(cols.size());
            for (size_t s = 0; s < cols.size(); s++) {
                auto & masks = (*result)[s];
                masks.assign(ks.size(), std::vector<uint8_t>((size_t) ((numel + 7) / 8), 0));
                ScoreSource src{wf, cols[s], n_in, n_in * rows};
                for (int64_t g = 0; g < numel; g += group) mark_top(src, g, group, ks, masks, radix_min, scratch, hist);
            }
        },
        [result](Napi::Env e) -> Napi::Value {
            Napi::Array out = Napi::Array::New(e, result->size());
            for (size_t s = 0; s < result->size(); s++) {
                Napi::Array per = Napi::Array::New(e, (*result)[s].size());
                for (size_t q = 0; q < (*result)[s].size(); q++) per.Set((uint32_t) q, to_js_bytes(e, (*result)[s][q]));
                out.Set((uint32_t) s, per);
            }
            return out;
        });
    w->Keep(data); w->Keep(cwa);
    for (uint32_t i = 0; i < cwa.Length(); i++) w->Keep(cwa.Get(i));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
    CODEC_CATCH(env)
}

// requantizeBlocks({ type, blocks: Uint8Array, selected: Uint8Array (one bit per element),
//   scale: number (0 prunes), imatrix?: Float32Array (one per element), strategy: 'plain'|'best' }):
//   Promise<{ bytes, before: Float32Array, after: Float32Array, chosen: Uint8Array (per block:
//   0 plain, 1 keep-scale, 2 weighted, 3 exact) }>
// Target of every block: selected weights times scale, the others unchanged. 'best' keeps, per
// block, the candidate closest to the target (least squared error; ties: fewer changed bytes).
Napi::Value RequantizeBlocks(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    CODEC_TRY
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("EUSAGE", "requantizeBlocks(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    const ggml_type t = checked_type(get_int(o, "type"));
    if (!can_dequantize(t) || !can_quantize(t)) throw CodedError("EQUANT", "ggml cannot requantize " + type_name(t));
    auto blocks = get_array<uint8_t>(o.Get("blocks"), "blocks");
    const int64_t bs = ggml_blck_size(t); const size_t ts = ggml_type_size(t);
    if (blocks.ByteLength() % ts != 0) throw CodedError("EUSAGE", "blocks is not a whole number of " + type_name(t) + " blocks");
    const int64_t nblocks = (int64_t) (blocks.ByteLength() / ts);
    const int64_t n = nblocks * bs;
    auto selected = get_array<uint8_t>(o.Get("selected"), "selected");
    if ((int64_t) selected.ByteLength() != (n + 7) / 8) throw CodedError("EUSAGE", "selected must hold one bit per element of blocks");
    Napi::Value sv = o.Get("scale");
    if (!sv.IsNumber() || !std::isfinite(sv.As<Napi::Number>().DoubleValue())) throw CodedError("EUSAGE", "scale must be a finite number");
    const double scale = sv.As<Napi::Number>().DoubleValue();
    const float * imatrix = nullptr;
    Napi::Value iv = o.Get("imatrix");
    if (!iv.IsUndefined() && !iv.IsNull()) {
        auto im = get_array<float>(iv, "imatrix");
        if ((int64_t) im.ElementLength() != n) throw CodedError("EUSAGE", "imatrix must hold one value per element of blocks");
        imatrix = im.Data();
    }
    if (imatrix == nullptr && ggml_quantize_requires_imatrix(t)) throw CodedError("EQUANT", type_name(t) + " needs an importance matrix to be requantized: pass the statistics (their sums of squares are used)");
    std::string strategy = o.Get("strategy").IsString() ? o.Get("strategy").As<Napi::String>().Utf8Value() : "best";
    if (strategy != "best" && strategy != "plain" && strategy != "keep-scale") throw CodedError("EUSAGE", "strategy must be 'best', 'plain' or 'keep-scale'");
    if (strategy == "keep-scale" && !keep_scale_supported(t)) throw CodedError("EQUANT", "keep-scale re-rounding does not support " + type_name(t));

    struct Out { std::vector<uint8_t> bytes, chosen; std::vector<float> before, after; };
    auto out = std::make_shared<Out>();
    const uint8_t * src = blocks.Data(); const uint8_t * sel = selected.Data();
    auto * w = new TaskWorker(env,
        [=]() {
            auto is_sel = [sel](int64_t i) { return (sel[i >> 3] >> (i & 7)) & 1; };
            out->bytes.assign(src, src + nblocks * ts);
            out->before.resize((size_t) n); out->after.resize((size_t) n); out->chosen.assign((size_t) nblocks, 0);
            if (n) dequantize_into(t, src, out->before.data(), n);
            std::vector<float> target(out->before);
            // the target in float32 of the exact product, as a float64 reference computes it
            for (int64_t i = 0; i < n; i++) if (is_sel(i)) target[i] = scale == 0.0 ? 0.0f : (float) ((double) out->before[i] * scale);
            if (!ggml_is_quantized(t)) {
                // F32/F16/BF16: every element is its own block; conversion of unchanged values is exact.
                if (n) ggml_quantize_chunk(t, target.data(), out->bytes.data(), 0, 1, n, nullptr);
                // keep the original bytes of unselected elements (NaN payloads, -0) verbatim
                for (int64_t i = 0; i < n; i++) if (!is_sel(i)) memcpy(out->bytes.data() + i * ts, src + i * ts, ts);
                if (n) dequantize_into(t, out->bytes.data(), out->after.data(), n);
                std::fill(out->chosen.begin(), out->chosen.end(), 3);
                return;
            }
            std::vector<uint8_t> cand(ts), best(ts);
            std::vector<float> deq((size_t) bs), weights((size_t) bs);
            for (int64_t b = 0; b < nblocks; b++) {
                const float * tg = target.data() + b * bs;
                const uint8_t * orig = src + b * ts;
                double best_err = INFINITY; int best_diff = 1 << 30; int best_kind = -1;
                auto consider = [&](int kind) {
                    dequantize_into(t, cand.data(), deq.data(), bs);
                    double err = 0;
                    for (int64_t j = 0; j < bs; j++) { double d = (double) deq[j] - (double) tg[j]; err += d * d; }
                    if (!std::isfinite(err)) return;
                    int diff = 0; for (size_t k = 0; k < ts; k++) diff += cand[k] != orig[k];
                    if (err < best_err || (err == best_err && diff < best_diff)) { best_err = err; best_diff = diff; best_kind = kind; best = cand; }
                };
                const float * im = imatrix ? imatrix + b * bs : nullptr;
                if (strategy != "keep-scale") {
                    ggml_quantize_chunk(t, tg, cand.data(), 0, 1, bs, im);
                    consider(0);
                }
                if (strategy != "plain" && keep_scale_supported(t)) {
                    memcpy(cand.data(), orig, ts);
                    for (int j = 0; j < bs; j++) {
                        if (!is_sel(b * bs + j)) continue;
                        CodeSlot s = read_slot(t, cand.data(), j);
                        if (!(s.a != 0) || !std::isfinite(s.a) || !std::isfinite(s.b)) continue;
                        const double qf = ((double) tg[j] - s.b) / s.a;
                        int q0 = (int) std::lround(std::max((double) s.qmin, std::min((double) s.qmax, qf)));
                        int bestq = s.q; double beste = std::fabs((double) (s.a * s.q + s.b) - tg[j]);
                        for (int q = q0 - 1; q <= q0 + 1; q++) {
                            if (q < s.qmin || q > s.qmax) continue;
                            double e = std::fabs((double) (s.a * q + s.b) - tg[j]);
                            if (e < beste) { beste = e; bestq = q; }
                        }
                        if (bestq != s.q) write_code(t, cand.data(), j, bestq);
                    }
                    consider(1);
                }
                if (strategy == "best" && uses_imatrix(t)) {
                    for (int j = 0; j < bs; j++) weights[j] = (im ? std::max(im[j], 1e-8f) : 1.0f) * (is_sel(b * bs + j) ? 16.0f : 1.0f);
                    ggml_quantize_chunk(t, tg, cand.data(), 0, 1, bs, weights.data());
                    consider(2);
                }
                if (best_kind < 0) { best.assign(orig, orig + ts); best_kind = 0; }
                memcpy(out->bytes.data() + b * ts, best.data(), ts);
                out->chosen[b] = (uint8_t) best_kind;
            }
            if (n) dequantize_into(t, out->bytes.data(), out->after.data(), n);
        },
        [out](Napi::Env e) -> Napi::Value {
            Napi::Object r = Napi::Object::New(e);
            r.Set("bytes", to_js_bytes(e, out->bytes));
            r.Set("before", to_js_floats(e, out->before));
            r.Set("after", to_js_floats(e, out->after));
            r.Set("chosen", to_js_bytes(e, out->chosen));
            return r;
        });
    w->Keep(blocks); w->Keep(selected);
    if (imatrix) w->Keep(iv);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
    CODEC_CATCH(env)
}

}  // namespace

void RegisterCodec(Napi::Env env, Napi::Object exports) {
    exports.Set("codecTypeInfo", Napi::Function::New(env, TypeInfo));
    exports.Set("dequantize", Napi::Function::New(env, Dequantize));
    exports.Set("quantize", Napi::Function::New(env, Quantize));
    exports.Set("selectTopK", Napi::Function::New(env, SelectTopK));
    exports.Set("requantizeBlocks", Napi::Function::New(env, RequantizeBlocks));
}
