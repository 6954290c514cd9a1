// N-API helpers every native module uses: coded errors, argument reading and promise workers.
// Argument readers throw CodedError, which Export<> (on the JS thread) and the workers (off it)
// turn into a JS Error with a `code` property (the TS side maps codes to typed errors).
#pragma once
#include <napi.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Coded errors

// An error that reaches JS as MathneuroError(code, message); safe to throw on any thread.
struct CodedError : std::runtime_error {
    std::string code;
    CodedError(const char * c, const std::string & m) : std::runtime_error(m), code(c) {}
};

inline Napi::Error CodedJsError(Napi::Env env, const std::string & code, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", Napi::String::New(env, code));
    return err;
}

// Throws a JS Error with a `code` property now (JS thread only).
[[noreturn]] inline void ThrowCoded(Napi::Env env, const char * code, const std::string & message) {
    throw CodedJsError(env, code, message);
}

// Wraps an exported function: a CodedError thrown on the JS thread reaches JS as a coded Error
// (node-addon-api passes only Napi::Error through).
template <Napi::Value (*F)(const Napi::CallbackInfo &)>
Napi::Value Export(const Napi::CallbackInfo & info) {
    try { return F(info); }
    catch (const CodedError & e) { throw CodedJsError(info.Env(), e.code, e.what()); }
}

// ---------------------------------------------------------------------------------------------
// Arguments: every input is checked before it can reach a GGML_ASSERT.

inline bool IsSet(const Napi::Object & o, const char * key) { return o.Has(key) && !o.Get(key).IsUndefined(); }

// info[0], the options object of a call written `usage` (e.g. "selectTopK(options)").
inline Napi::Object RequireOptionsObject(const Napi::CallbackInfo & info, const char * usage) {
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("EUSAGE", usage);
    return info[0].As<Napi::Object>();
}

inline std::string RequireString(const Napi::Value & v, const char * what) {
    if (!v.IsString()) throw CodedError("EUSAGE", std::string(what) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
}

inline std::vector<std::string> RequireStringArray(const Napi::Value & v, const char * what) {
    if (!v.IsArray()) throw CodedError("EUSAGE", std::string(what) + " must be an array of strings");
    Napi::Array a = v.As<Napi::Array>();
    std::vector<std::string> out;
    out.reserve(a.Length());
    for (uint32_t i = 0; i < a.Length(); i++) out.push_back(RequireString(a.Get(i), what));
    return out;
}

// o[key]: an integer in [min_value, 2^53 - 1].
inline int64_t RequireInteger(const Napi::Object & o, const char * key, int64_t min_value = 0) {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) throw CodedError("EUSAGE", std::string(key) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < (double) min_value || d > 9007199254740991.0)
        throw CodedError("EUSAGE", std::string(key) + " must be an integer >= " + std::to_string(min_value));
    return (int64_t) d;
}

// o[key] as RequireInteger reads it, or fallback when absent.
inline int64_t OptionalInteger(const Napi::Object & o, const char * key, int64_t fallback, int64_t min_value) {
    return IsSet(o, key) ? RequireInteger(o, key, min_value) : fallback;
}

// o[key]: a number in [lo, hi], or fallback when absent.
inline double NumberOption(const Napi::Object & o, const char * key, double fallback, double lo, double hi) {
    if (!IsSet(o, key)) return fallback;
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) throw CodedError("EUSAGE", std::string(key) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < lo || d > hi)
        throw CodedError("EUSAGE", std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(d));
    return d;
}

inline int IntOption(const Napi::Object & o, const char * key, int fallback, int lo, int hi) {
    double d = NumberOption(o, key, fallback, lo, hi);
    if (d != std::floor(d)) throw CodedError("EUSAGE", std::string(key) + " must be an integer");
    return (int) d;
}

// info[i] when it is a boolean, else fallback (lenient, as the optional flags have always been read).
inline bool BoolArgument(const Napi::CallbackInfo & info, size_t i, bool fallback) {
    return info.Length() > i && info[i].IsBoolean() ? info[i].As<Napi::Boolean>().Value() : fallback;
}

// A typed array of element type T (uint8_t also accepts Uint8ClampedArray).
template <typename T>
Napi::TypedArrayOf<T> RequireTypedArray(const Napi::Value & v, const char * what) {
    if (!v.IsTypedArray()) throw CodedError("EUSAGE", std::string(what) + " must be a typed array");
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    napi_typedarray_type want = napi_uint8_array;
    if (std::is_same<T, float>::value) want = napi_float32_array;
    else if (std::is_same<T, double>::value) want = napi_float64_array;
    if (ta.TypedArrayType() != want && !(want == napi_uint8_array && ta.TypedArrayType() == napi_uint8_clamped_array))
        throw CodedError("EUSAGE", std::string(what) + " has the wrong element type");
    return v.As<Napi::TypedArrayOf<T>>();
}

// Numbers or BigInts (GGUF metadata carries 64-bit integers); no range checks.
inline bool IsNumeric(const Napi::Value & v) { return v.IsNumber() || v.IsBigInt(); }
inline double NumericDouble(const Napi::Value & v) {
    if (v.IsBigInt()) { bool lossless; return (double) v.As<Napi::BigInt>().Int64Value(&lossless); }
    return v.As<Napi::Number>().DoubleValue();
}
inline int64_t NumericInt64(const Napi::Value & v) {
    if (v.IsBigInt()) { bool lossless; return v.As<Napi::BigInt>().Int64Value(&lossless); }
    return v.As<Napi::Number>().Int64Value();
}
inline uint64_t NumericUint64(const Napi::Value & v) {
    if (v.IsBigInt()) { bool lossless; return v.As<Napi::BigInt>().Uint64Value(&lossless); }
    return (uint64_t) v.As<Napi::Number>().Int64Value();
}

// ---------------------------------------------------------------------------------------------
// Results

// A new JS typed array (Uint8Array, Int32Array, Float32Array, Float64Array) holding a copy of v.
template <typename JsArray, typename T>
JsArray ToJsArray(Napi::Env env, const std::vector<T> & v) {
    static_assert(sizeof(T) == sizeof(*JsArray().Data()), "element sizes differ");
    JsArray out = JsArray::New(env, v.size());
    if (!v.empty()) memcpy(out.Data(), v.data(), v.size() * sizeof(T));
    return out;
}

// ---------------------------------------------------------------------------------------------
// Promise workers

// A libuv worker (Napi::AsyncWorker or Napi::AsyncProgressQueueWorker<P>) that settles a promise.
// Start() queues it and returns the promise; Keep() holds JS objects alive until it is done.
template <class Base>
class PromiseWorker : public Base {
public:
    template <typename... A>
    explicit PromiseWorker(Napi::Env env, A &&... base_args)
        : Base(env, std::forward<A>(base_args)...), deferred_(Napi::Promise::Deferred::New(env)) {}
    void Keep(const Napi::Value & v) { if (v.IsObject()) keep_.push_back(Napi::Persistent(v.As<Napi::Object>())); }
    Napi::Promise Start() {
        Napi::Promise p = deferred_.Promise();
        this->Queue();
        return p;
    }
protected:
    void Resolve(const Napi::Value & v) { deferred_.Resolve(v); }
    void Reject(const Napi::Value & v) { deferred_.Reject(v); }
    void RejectCoded(const std::string & code, const std::string & message) { deferred_.Reject(CodedJsError(this->Env(), code, message).Value()); }
private:
    Napi::Promise::Deferred deferred_;
    std::vector<Napi::ObjectReference> keep_;
};

// Runs work() on a libuv thread and resolves with done(env). A CodedError from work() rejects with
// its code, any other exception with EIO.
class TaskWorker : public PromiseWorker<Napi::AsyncWorker> {
public:
    TaskWorker(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
        : PromiseWorker<Napi::AsyncWorker>(env), work_(std::move(work)), done_(std::move(done)) {}
protected:
    void Execute() override {
        try { work_(); }
        catch (const CodedError & e) { code_ = e.code; SetError(e.what()); }
        catch (const std::bad_alloc &) { code_ = "EIO"; SetError("out of memory"); }
        catch (const std::exception & e) { code_ = "EIO"; SetError(e.what()); }
    }
    void OnOK() override {
        Napi::HandleScope scope(Env());
        try { Resolve(done_(Env())); }
        catch (const Napi::Error & e) { Reject(e.Value()); }
    }
    void OnError(const Napi::Error & e) override {
        Napi::HandleScope scope(Env());
        RejectCoded(code_.empty() ? "EIO" : code_, e.Message());
    }
private:
    std::function<void()> work_;
    std::function<Napi::Value(Napi::Env)> done_;
    std::string code_;
};
