// GGUF headers through ggml's own gguf code: build a header for new tensors (synth, statistics
// files), or rewrite the metadata of an existing file keeping its tensor layout (patching).
// Tensor data is streamed by the TS side; these functions only produce header bytes.
#include "codec.h"
#include "common.h"
#include "ggml-cpp.h"

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <memory>
#ifdef __linux__
#include <sys/stat.h>
#include <unistd.h>
#endif
#include <string>
#include <unordered_set>
#include <vector>

namespace {

// Set one key from { key, type, arrayType?, value } (types as in gguf.h enum gguf_type).
void set_kv(Napi::Env env, gguf_context * ctx, Napi::Object e) {
    if (!e.Get("key").IsString() || !e.Get("type").IsNumber()) ThrowCoded(env, "EUSAGE", "metadata entry needs key (string) and type (number)");
    const std::string key = e.Get("key").As<Napi::String>().Utf8Value();
    if (key.empty()) ThrowCoded(env, "EUSAGE", "metadata key is empty");
    const int type = e.Get("type").As<Napi::Number>().Int32Value();
    Napi::Value v = e.Get("value");
    auto need = [&](bool ok) { if (!ok) ThrowCoded(env, "EUSAGE", "metadata \"" + key + "\": value does not match its type"); };
    const char * k = key.c_str();
    switch (type) {
        case GGUF_TYPE_UINT8:   need(IsNumeric(v)); gguf_set_val_u8(ctx, k, (uint8_t) NumericInt64(v)); break;
        case GGUF_TYPE_INT8:    need(IsNumeric(v)); gguf_set_val_i8(ctx, k, (int8_t) NumericInt64(v)); break;
        case GGUF_TYPE_UINT16:  need(IsNumeric(v)); gguf_set_val_u16(ctx, k, (uint16_t) NumericInt64(v)); break;
        case GGUF_TYPE_INT16:   need(IsNumeric(v)); gguf_set_val_i16(ctx, k, (int16_t) NumericInt64(v)); break;
        case GGUF_TYPE_UINT32:  need(IsNumeric(v)); gguf_set_val_u32(ctx, k, (uint32_t) NumericInt64(v)); break;
        case GGUF_TYPE_INT32:   need(IsNumeric(v)); gguf_set_val_i32(ctx, k, (int32_t) NumericInt64(v)); break;
        case GGUF_TYPE_FLOAT32: need(IsNumeric(v)); gguf_set_val_f32(ctx, k, (float) NumericDouble(v)); break;
        case GGUF_TYPE_UINT64:  need(IsNumeric(v)); gguf_set_val_u64(ctx, k, NumericUint64(v)); break;
        case GGUF_TYPE_INT64:   need(IsNumeric(v)); gguf_set_val_i64(ctx, k, NumericInt64(v)); break;
        case GGUF_TYPE_FLOAT64: need(IsNumeric(v)); gguf_set_val_f64(ctx, k, NumericDouble(v)); break;
        case GGUF_TYPE_BOOL:    need(v.IsBoolean()); gguf_set_val_bool(ctx, k, v.As<Napi::Boolean>().Value()); break;
        case GGUF_TYPE_STRING:  need(v.IsString()); gguf_set_val_str(ctx, k, v.As<Napi::String>().Utf8Value().c_str()); break;
        case GGUF_TYPE_ARRAY: {
            need(v.IsArray() && e.Get("arrayType").IsNumber());
            Napi::Array arr = v.As<Napi::Array>();
            const int at = e.Get("arrayType").As<Napi::Number>().Int32Value();
            const uint32_t n = arr.Length();
            if (at == GGUF_TYPE_STRING) {
                std::vector<std::string> strs(n);
                std::vector<const char *> ptrs(n);
                for (uint32_t i = 0; i < n; ++i) {
                    Napi::Value x = arr.Get(i);
                    need(x.IsString());
                    strs[i] = x.As<Napi::String>().Utf8Value();
                    ptrs[i] = strs[i].c_str();
                }
                gguf_set_arr_str(ctx, k, ptrs.data(), n);
                break;
            }
            size_t elem = 0;
            switch (at) {
                case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: elem = 1; break;
                case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: elem = 2; break;
                case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: elem = 4; break;
                case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: elem = 8; break;
                default: ThrowCoded(env, "EUSAGE", "metadata \"" + key + "\": unsupported array element type " + std::to_string(at));
            }
            std::vector<uint8_t> buf(elem * n);
            for (uint32_t i = 0; i < n; ++i) {
                Napi::Value x = arr.Get(i);
                uint8_t * p = buf.data() + elem * i;
                switch (at) {
                    case GGUF_TYPE_BOOL:    { need(x.IsBoolean()); uint8_t b = x.As<Napi::Boolean>().Value(); memcpy(p, &b, 1); break; }
                    case GGUF_TYPE_UINT8:   { need(IsNumeric(x)); uint8_t y = (uint8_t) NumericInt64(x); memcpy(p, &y, 1); break; }
                    case GGUF_TYPE_INT8:    { need(IsNumeric(x)); int8_t y = (int8_t) NumericInt64(x); memcpy(p, &y, 1); break; }
                    case GGUF_TYPE_UINT16:  { need(IsNumeric(x)); uint16_t y = (uint16_t) NumericInt64(x); memcpy(p, &y, 2); break; }
                    case GGUF_TYPE_INT16:   { need(IsNumeric(x)); int16_t y = (int16_t) NumericInt64(x); memcpy(p, &y, 2); break; }
                    case GGUF_TYPE_UINT32:  { need(IsNumeric(x)); uint32_t y = (uint32_t) NumericInt64(x); memcpy(p, &y, 4); break; }
                    case GGUF_TYPE_INT32:   { need(IsNumeric(x)); int32_t y = (int32_t) NumericInt64(x); memcpy(p, &y, 4); break; }
                    case GGUF_TYPE_FLOAT32: { need(IsNumeric(x)); float y = (float) NumericDouble(x); memcpy(p, &y, 4); break; }
                    case GGUF_TYPE_UINT64:  { need(IsNumeric(x)); uint64_t y = NumericUint64(x); memcpy(p, &y, 8); break; }
                    case GGUF_TYPE_INT64:   { need(IsNumeric(x)); int64_t y = NumericInt64(x); memcpy(p, &y, 8); break; }
                    case GGUF_TYPE_FLOAT64: { need(IsNumeric(x)); double y = NumericDouble(x); memcpy(p, &y, 8); break; }
                }
            }
            gguf_set_arr_data(ctx, k, (gguf_type) at, buf.data(), n);
            break;
        }
        default:
            ThrowCoded(env, "EUSAGE", "metadata \"" + key + "\": unknown type " + std::to_string(type));
    }
}

// Each metadata entry of `set` (an array; anything else sets nothing) set in ctx, in order.
void apply_kv(Napi::Env env, gguf_context * ctx, Napi::Value set) {
    if (set.IsArray()) {
        Napi::Array s = set.As<Napi::Array>();
        for (uint32_t i = 0; i < s.Length(); ++i) {
            if (!s.Get(i).IsObject()) ThrowCoded(env, "EUSAGE", "metadata entries must be objects");
            set_kv(env, ctx, s.Get(i).As<Napi::Object>());
        }
    }
}

// { header, tensors: {name, offset, byteSize}[], alignment } for a header's bytes and its context
Napi::Object header_object(Napi::Env env, Napi::Buffer<uint8_t> header, gguf_context * ctx) {
    Napi::Object out = Napi::Object::New(env);
    out.Set("header", header);
    Napi::Array offs = Napi::Array::New(env);
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); ++i) {
        Napi::Object t = Napi::Object::New(env);
        t.Set("name", gguf_get_tensor_name(ctx, i));
        t.Set("offset", (double) gguf_get_tensor_offset(ctx, i));
        t.Set("byteSize", (double) gguf_get_tensor_size(ctx, i));
        offs.Set((uint32_t) i, t);
    }
    out.Set("tensors", offs);
    out.Set("alignment", (double) gguf_get_alignment(ctx));
    return out;
}

Napi::Object header_result(Napi::Env env, gguf_context * ctx) {
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(env, gguf_get_meta_size(ctx));
    gguf_get_meta_data(ctx, buf.Data());
    return header_object(env, buf, ctx);
}

// ggufBuildHeader({ metadata: Entry[], tensors: {name, type, shape}[] }) -> { header: Buffer, tensors: {name, offset, byteSize}[] }
Napi::Value BuildHeader(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) ThrowCoded(env, "EUSAGE", "ggufBuildHeader(spec)");
    Napi::Object spec = info[0].As<Napi::Object>();
    gguf_context_ptr ctx(gguf_init_empty());
    apply_kv(env, ctx.get(), spec.Get("metadata"));
    Napi::Value tv = spec.Get("tensors");
    if (!tv.IsArray()) ThrowCoded(env, "EUSAGE", "spec.tensors must be an array");
    Napi::Array tensors = tv.As<Napi::Array>();
    ggml_init_params ip = { ggml_tensor_overhead() * (tensors.Length() + 1), nullptr, /*no_alloc*/ true };
    ggml_context_ptr meta(ggml_init(ip));
    std::unordered_set<std::string> seen;
    for (uint32_t i = 0; i < tensors.Length(); ++i) {
        Napi::Object t = tensors.Get(i).As<Napi::Object>();
        if (!t.Get("name").IsString() || !t.Get("type").IsNumber() || !t.Get("shape").IsArray()) ThrowCoded(env, "EUSAGE", "tensor spec needs name, type, shape");
        const std::string name = t.Get("name").As<Napi::String>().Utf8Value();
        if (name.empty() || name.size() >= GGML_MAX_NAME) ThrowCoded(env, "EUSAGE", "tensor name \"" + name + "\" must be 1.." + std::to_string(GGML_MAX_NAME - 1) + " bytes");
        if (!seen.insert(name).second) ThrowCoded(env, "EUSAGE", "duplicate tensor name \"" + name + "\"");
        const int type = t.Get("type").As<Napi::Number>().Int32Value();
        if (type < 0 || type >= GGML_TYPE_COUNT || ggml_get_type_traits((ggml_type) type)->blck_size == 0) ThrowCoded(env, "EUSAGE", "tensor \"" + name + "\": unknown type " + std::to_string(type));
        Napi::Array shape = t.Get("shape").As<Napi::Array>();
        if (shape.Length() < 1 || shape.Length() > GGML_MAX_DIMS) ThrowCoded(env, "EUSAGE", "tensor \"" + name + "\": 1 to 4 dimensions");
        int64_t ne[GGML_MAX_DIMS] = {1, 1, 1, 1};
        for (uint32_t d = 0; d < shape.Length(); ++d) {
            ne[d] = NumericInt64(shape.Get(d));
            if (ne[d] <= 0) ThrowCoded(env, "EUSAGE", "tensor \"" + name + "\": dimensions must be > 0");
        }
        if (ne[0] % ggml_blck_size((ggml_type) type) != 0) ThrowCoded(env, "EUSAGE", "tensor \"" + name + "\": row length is not a multiple of the block size");
        ggml_tensor * gt = ggml_new_tensor(meta.get(), (ggml_type) type, (int) shape.Length(), ne);
        ggml_set_name(gt, name.c_str());
        gguf_add_tensor(ctx.get(), gt);
    }
    return header_result(env, ctx.get());
}

// ggufRewriteHeader(srcPath, setMetadata: Entry[], removeKeys: string[]) -> Promise of the same shape
// as ggufBuildHeader's result. The tensor infos (and so the data section layout) are the source's;
// only metadata changes: removeKeys removed, then each entry set (an existing key removed and the
// entry appended), in order. The source's header is read and the new one written on the thread
// pool: ggml's parse of a large vocabulary (Qwen2: 300k strings) took ~190 ms of the JS thread,
// which meanwhile could not start a streaming selection's next tensor. The entries are checked and
// converted here first, into a context of their own that gguf_set_kv copies over the source's.
// headerBytes (optional): the source's header as the caller read and validated it, in pieces (the
// views its reader kept), and dataOffset where its data section starts: ggml parses those bytes
// (gguf_init_from_callback) instead of reading the file again, which cost ~4x as much through
// stdio (qwen-0.5b: 55-97 ms from the file, 13-87 ms from memory, on the thread pool).
struct HeaderPieces {
    std::vector<std::pair<const uint8_t *, size_t>> pieces;   // in order, from byte 0
    size_t total = 0;
};

size_t read_pieces(void * userdata, void * output, uint64_t offset, size_t len) {
    const HeaderPieces & h = *static_cast<const HeaderPieces *>(userdata);
    if (offset >= h.total) return 0;
    size_t done = 0, at = 0;
    uint8_t * out = static_cast<uint8_t *>(output);
    for (const auto & p : h.pieces) {
        if (done == len) break;
        const uint64_t want = offset + done;
        if (want < at + p.second) {
            const size_t from = (size_t) (want - at), n = std::min(p.second - from, len - done);
            memcpy(out + done, p.first + from, n);
            done += n;
        }
        at += p.second;
    }
    return done;
}

Napi::Value RewriteHeader(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowCoded(env, "EUSAGE", "ggufRewriteHeader(srcPath, set?, remove?, headerBytes?, dataOffset?)");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    struct State {
        std::string path;
        HeaderPieces source;   // empty: the file is read
        uint64_t data_offset = 0;
        std::vector<std::string> remove;
        gguf_context_ptr set;
        gguf_context_ptr ctx;
        ggml_context_ptr meta;
        uint8_t * header = nullptr;
        size_t header_size = 0;
        ~State() { free(header); }
    };
    auto st = std::make_shared<State>();
    st->path = path;
    st->set.reset(gguf_init_empty());
    if (info.Length() > 2 && info[2].IsArray()) {
        Napi::Array r = info[2].As<Napi::Array>();
        for (uint32_t i = 0; i < r.Length(); ++i) {
            if (!r.Get(i).IsString()) ThrowCoded(env, "EUSAGE", "removeKeys must be strings");
            st->remove.push_back(r.Get(i).As<Napi::String>().Utf8Value());
        }
    }
    apply_kv(env, st->set.get(), info.Length() > 1 ? info[1] : Napi::Value());
    std::vector<Napi::Value> kept;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
        if (!info[3].IsArray() || info.Length() < 5 || !info[4].IsNumber()) ThrowCoded(env, "EUSAGE", "headerBytes must be an array of Uint8Array, with dataOffset");
        Napi::Array a = info[3].As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Value v = a.Get(i);
            auto b = RequireTypedArray<uint8_t>(v, "headerBytes[i]");
            st->source.pieces.emplace_back(b.Data(), b.ByteLength());
            st->source.total += b.ByteLength();
            kept.push_back(v);
        }
        const double d = info[4].As<Napi::Number>().DoubleValue();
        if (!(d >= (double) st->source.total) || d != std::floor(d) || d > 9007199254740991.0) ThrowCoded(env, "EUSAGE", "dataOffset must be an integer at or past the end of headerBytes");
        if (st->source.total == 0) ThrowCoded(env, "EUSAGE", "headerBytes is empty");
        st->data_offset = (uint64_t) d;
    }
    auto * w = new TaskWorker(env,
        [st]() {
            ggml_context * meta_raw = nullptr;
            gguf_init_params gp = { /*no_alloc*/ true, &meta_raw };
            // (the padding up to the data section is sought past, not read)
            st->ctx.reset(st->source.total ? gguf_init_from_callback(read_pieces, &st->source, 0, st->data_offset, gp) : gguf_init_from_file(st->path.c_str(), gp));
            st->meta.reset(meta_raw);
            if (!st->ctx) throw CodedError("EBADGGUF", "ggml could not read the GGUF header of " + st->path + (st->source.total ? " (as read)" : ""));
            for (const std::string & k : st->remove) gguf_remove_key(st->ctx.get(), k.c_str());
            gguf_set_kv(st->ctx.get(), st->set.get());
            st->header_size = gguf_get_meta_size(st->ctx.get());
            st->header = (uint8_t *) malloc(std::max<size_t>(1, st->header_size));
            if (!st->header) throw std::bad_alloc();
            gguf_get_meta_data(st->ctx.get(), st->header);
        },
        [st](Napi::Env e) -> Napi::Value {
            uint8_t * bytes = st->header;
            st->header = nullptr;   // the Buffer owns it now
            return header_object(e, Napi::Buffer<uint8_t>::New(e, bytes, st->header_size, [](Napi::Env, uint8_t * d) { free(d); }), st->ctx.get());
        });
    for (const Napi::Value & v : kept) w->Keep(v);
    return w->Start();
}

// ggufQuantizeRows(type, values: Float32Array, nPerRow) -> Buffer: rows quantized with ggml's own code,
// for writing new tensors (synth). No importance matrix: types that require one are refused.
Napi::Value QuantizeRows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsTypedArray() || !info[2].IsNumber()) ThrowCoded(env, "EUSAGE", "ggufQuantizeRows(type, Float32Array, nPerRow)");
    const int type = info[0].As<Napi::Number>().Int32Value();
    if (type < 0 || type >= GGML_TYPE_COUNT || ggml_get_type_traits((ggml_type) type)->blck_size == 0) ThrowCoded(env, "EUSAGE", "unknown ggml type " + std::to_string(type));
    Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_float32_array) ThrowCoded(env, "EUSAGE", "values must be a Float32Array");
    Napi::Float32Array values = ta.As<Napi::Float32Array>();
    const int64_t n_per_row = info[2].As<Napi::Number>().Int64Value();
    const int64_t n = (int64_t) values.ElementLength();
    const ggml_type t = (ggml_type) type;
    if (n_per_row <= 0 || n % n_per_row != 0) ThrowCoded(env, "EUSAGE", "values length is not a multiple of nPerRow");
    if (n_per_row % ggml_blck_size(t) != 0) ThrowCoded(env, "EUSAGE", "nPerRow is not a multiple of the block size of " + std::string(ggml_type_name(t)));
    if (ggml_quantize_requires_imatrix(t)) ThrowCoded(env, "EQUANT", std::string(ggml_type_name(t)) + " needs an importance matrix");
    const int64_t nrows = n / n_per_row;
    const size_t row_size = ggml_row_size(t, n_per_row);
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, row_size * nrows);
    if (t == GGML_TYPE_F32) { memcpy(out.Data(), values.Data(), n * sizeof(float)); return out; }
    ggml_quantize_init(t);
    ggml_quantize_chunk(t, values.Data(), out.Data(), 0, nrows, n_per_row, nullptr);
    return out;
}

} // namespace


#ifdef __linux__
// copyFileRange(srcFd, dstFd, srcOffset, dstOffset, length): Promise of the number of bytes copied
// inside the kernel with copy_file_range(2) (no trip through user memory, as cp does), or -1 when
// the kernel or the file systems cannot (the caller then copies through a buffer). On the thread
// pool: copying a 272 MB embedding held the JS thread ~0.18 s, while a streaming selection waited
// for it to start its next tensors. Other failures (ENOSPC, EFBIG, EIO, ...) reject with an Error
// whose code is the errno name, as Node's fs does.
Napi::Value CopyFileRange(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    for (size_t i = 0; i < 5; i++) if (info.Length() <= i || !info[i].IsNumber()) ThrowCoded(env, "EUSAGE", "copyFileRange(srcFd, dstFd, srcOffset, dstOffset, length)");
    const double a[5] = { info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Number>().DoubleValue(), info[2].As<Napi::Number>().DoubleValue(),
                          info[3].As<Napi::Number>().DoubleValue(), info[4].As<Napi::Number>().DoubleValue() };
    for (double d : a) if (!(d >= 0) || d != (double) (int64_t) d || d > 9007199254740991.0) ThrowCoded(env, "EUSAGE", "copyFileRange: arguments must be non-negative integers");
    if (a[0] > 2147483647.0 || a[1] > 2147483647.0) ThrowCoded(env, "EUSAGE", "copyFileRange: not a file descriptor");
    const int src = (int) a[0], dst = (int) a[1];
    const off_t in0 = (off_t) a[2], out0 = (off_t) a[3];
    const int64_t length = (int64_t) a[4];
    auto done = std::make_shared<int64_t>(0);
    auto * w = new TaskWorker(env,
        [=]() {
            off_t in_off = in0, out_off = out0;
            int64_t left = length;
            while (left > 0) {
                const ssize_t n = copy_file_range(src, &in_off, dst, &out_off, (size_t) std::min<int64_t>(left, (int64_t) 1 << 30), 0);
                if (n < 0) {
                    const int e = errno;
                    if (e == EINTR) continue;
                    if (*done == 0 && (e == ENOSYS || e == EXDEV || e == EINVAL || e == EOPNOTSUPP || e == EPERM)) { *done = -1; return; }
                    const char * name = e == ENOSPC ? "ENOSPC" : e == EFBIG ? "EFBIG" : e == EDQUOT ? "EDQUOT" : e == EIO ? "EIO" : e == EBADF ? "EBADF" : "EIO";
                    throw CodedError(name, std::string("copy_file_range: ") + strerror(e));
                }
                if (n == 0) break;   // end of the source
                codec::start_writeback(dst, (int64_t) out_off - n, (size_t) n);
                left -= n; *done += n;
            }
        },
        [done](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, (double) *done); });
    return w->Start();
}
#endif

void RegisterGgufIo(Napi::Env env, Napi::Object exports) {
    exports.Set("ggufBuildHeader", Napi::Function::New(env, BuildHeader));
    exports.Set("ggufRewriteHeader", Napi::Function::New(env, RewriteHeader));
    exports.Set("ggufQuantizeRows", Napi::Function::New(env, QuantizeRows));
#ifdef __linux__
    exports.Set("copyFileRange", Napi::Function::New(env, CopyFileRange));
#endif
}
