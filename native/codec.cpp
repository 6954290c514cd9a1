// The tensor codec: type information, dequantization and quantization through ggml's own type
// traits. The keep-scale codes, the top-K selection and the requantization of selected weights
// live beside it (keep_scale.cpp, top_k.cpp, requantize.cpp; codec.h holds what they share).
#include "codec.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#ifndef _WIN32
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace codec {

bool valid_type(int64_t t) {
    if (t < 0 || t >= GGML_TYPE_COUNT) return false;
    const ggml_type_traits * tr = ggml_get_type_traits((ggml_type) t);
    return tr && tr->blck_size > 0 && tr->type_size > 0 && tr->type_name;
}

// The types ggml_quantize_chunk knows (it asserts on any other). This list and uses_imatrix's below
// are deliberate twins: two different sets of types, each as ggml-quants.c defines it.
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

bool g_fp16_inline = false;

bool fp16_check() {
    for (uint32_t h = 0; h < 65536; h++) {
        if (bits_f32(fp16_to_fp32_inline((uint16_t) h)) != bits_f32(ggml_fp16_to_fp32((ggml_fp16_t) h))) return false;
    }
    auto same = [](uint32_t w) { const float f = f32_bits(w); return fp32_to_fp16_inline(f) == ggml_fp32_to_fp16(f); };
    // fp32 values at, between and around every fp16 value (rounding ties and their neighbours),
    // the fp16 range's edges, infinities and NaNs with assorted payloads, and a stride through all
    for (uint32_t h = 0; h < 65536; h++) {
        const uint32_t w = bits_f32(ggml_fp16_to_fp32((ggml_fp16_t) h));
        for (int64_t d = -2; d <= 2; d++) if (!same((uint32_t) ((int64_t) w + d))) return false;
        const uint32_t mid = w + (1u << 12);   // halfway to the next fp16 value, for normal values
        for (int64_t d = -1; d <= 1; d++) if (!same((uint32_t) ((int64_t) mid + d))) return false;
    }
    for (uint64_t w = 0; w < ((uint64_t) 1 << 32); w += 4099) if (!same((uint32_t) w)) return false;
    for (uint32_t w : {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0xffffffffu, 0x477fefffu, 0x477ff000u, 0x477fffffu, 0x33000000u, 0x33000001u, 0x387fc000u, 0x38800000u})
        if (!same(w)) return false;
    return true;
}

// The `threads` option (default: every core).
int get_threads(const Napi::Object & o) {
    if (IsSet(o, "threads")) return (int) std::min<int64_t>(RequireInteger(o, "threads", 1), 1024);
    return (int) std::max(1u, std::thread::hardware_concurrency());
}

// The `read` / `write` options (codec.h).
FileAt file_at(const Napi::Object & o, const char * key) {
    FileAt f;
    if (!IsSet(o, key) || o.Get(key).IsNull()) return f;
    if (!o.Get(key).IsObject()) throw CodedError("EUSAGE", std::string(key) + " must be { fd, offset }");
    Napi::Object x = o.Get(key).As<Napi::Object>();
    const int64_t fd = RequireInteger(x, "fd", 0), offset = RequireInteger(x, "offset", 0);
    if (fd > 2147483647 || offset > ((int64_t) 1 << 53)) throw CodedError("EUSAGE", std::string(key) + ": not a file descriptor and offset");
#ifdef _WIN32
    throw CodedError("EUSAGE", std::string(key) + " is not supported on this platform");
#endif
    f.fd = (int) fd; f.offset = offset;
    return f;
}

const char * errno_code(int e) {
    return e == ENOSPC ? "ENOSPC" : e == EFBIG ? "EFBIG" : e == EDQUOT ? "EDQUOT" : "EIO";
}

#ifndef _WIN32
void read_fully(const FileAt & f, uint8_t * p, size_t n) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = pread(f.fd, p + done, std::min<size_t>(n - done, (size_t) 1 << 30), (off_t) (f.offset + (int64_t) done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw CodedError("EIO", std::string("reading the source: ") + strerror(errno));
        if (r == 0) throw CodedError("EIO", "source model: unexpected end of file at byte " + std::to_string(f.offset + (int64_t) done));
        done += (size_t) r;
    }
}

void write_fully(const FileAt & f, const uint8_t * p, size_t n) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = pwrite(f.fd, p + done, std::min<size_t>(n - done, (size_t) 1 << 30), (off_t) (f.offset + (int64_t) done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { const int e = errno; throw CodedError(errno_code(e), std::string("write: ") + strerror(e)); }
        done += (size_t) r;
    }
}

void start_writeback(int fd, int64_t offset, size_t n) {
#ifdef __linux__
    if (n > 0) (void) sync_file_range(fd, (off_t) offset, (off_t) n, SYNC_FILE_RANGE_WRITE);
#else
    (void) fd; (void) offset; (void) n;
#endif
}
#else
void start_writeback(int, int64_t, size_t) {}
void read_fully(const FileAt &, uint8_t *, size_t) { throw CodedError("EUSAGE", "read is not supported on this platform"); }
void write_fully(const FileAt &, const uint8_t *, size_t) { throw CodedError("EUSAGE", "write is not supported on this platform"); }
#endif

FileView::FileView(const FileAt & f, size_t size) {
#ifndef _WIN32
    struct stat st;
    if (fstat(f.fd, &st) != 0) throw CodedError("EIO", std::string("reading the source: ") + strerror(errno));
    if ((uint64_t) f.offset + size > (uint64_t) st.st_size) throw CodedError("EIO", "source model: unexpected end of file at byte " + std::to_string((int64_t) st.st_size));
    const int64_t page = std::max<int64_t>(1, sysconf(_SC_PAGESIZE));
    const int64_t start = f.offset - f.offset % page;
    const size_t lead = (size_t) (f.offset - start);
    if (size > 0) {
        int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
        flags |= MAP_POPULATE;   // the pages in the page cache mapped at once, not a fault per 16 of them
#endif
        void * p = mmap(nullptr, size + lead, PROT_READ, flags, f.fd, (off_t) start);
        if (p != MAP_FAILED) { map_ = p; map_len_ = size + lead; data_ = (const uint8_t *) p + lead; return; }
    }
    copy_.resize(size);
    read_fully(f, copy_.data(), size);
    data_ = copy_.data();
#else
    (void) f; (void) size;
    throw CodedError("EUSAGE", "read is not supported on this platform");
#endif
}

FileView::~FileView() {
#ifndef _WIN32
    if (map_) munmap(map_, map_len_);
#endif
}

}  // namespace codec

namespace {

using namespace codec;

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
    if (info.Length() < 3 || !info[0].IsNumber() || !info[2].IsNumber()) throw CodedError("EUSAGE", "dequantize(type, bytes, nElements)");
    const ggml_type t = checked_type(info[0].As<Napi::Number>().Int64Value());
    auto bytes = RequireTypedArray<uint8_t>(info[1], "bytes");
    const double nd = info[2].As<Napi::Number>().DoubleValue();
    if (!(nd >= 0) || nd != std::floor(nd)) throw CodedError("EUSAGE", "nElements must be a non-negative integer");
    const int64_t n = (int64_t) nd;
    if (bytes.ByteLength() != bytes_for(t, n)) throw CodedError("EUSAGE", "dequantize: " + std::to_string(bytes.ByteLength()) + " bytes do not hold " + std::to_string(n) + " " + type_name(t) + " elements");
    Napi::Float32Array out = Napi::Float32Array::New(env, (size_t) n);
    if (n) dequantize_into(t, bytes.Data(), out.Data(), n);
    return out;
}

// quantize(type, values: Float32Array, nPerRow, imatrix?: Float32Array | null): Uint8Array
Napi::Value Quantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[2].IsNumber()) throw CodedError("EUSAGE", "quantize(type, values, nPerRow, imatrix?)");
    const ggml_type t = checked_type(info[0].As<Napi::Number>().Int64Value());
    if (!can_quantize(t)) throw CodedError("EQUANT", "ggml cannot quantize to " + type_name(t));
    auto values = RequireTypedArray<float>(info[1], "values");
    const int64_t n = (int64_t) values.ElementLength();
    const int64_t per_row = info[2].As<Napi::Number>().Int64Value();
    if (per_row <= 0 || n % per_row != 0) throw CodedError("EUSAGE", "nPerRow must divide the number of values");
    if (per_row % ggml_blck_size(t) != 0) throw CodedError("EUSAGE", "a row of " + std::to_string(per_row) + " is not a whole number of " + type_name(t) + " blocks");
    const float * imatrix = nullptr;
    if (info.Length() > 3 && !info[3].IsNull() && !info[3].IsUndefined()) {
        auto im = RequireTypedArray<float>(info[3], "imatrix");
        if ((int64_t) im.ElementLength() != per_row) throw CodedError("EUSAGE", "imatrix must hold nPerRow values");
        imatrix = im.Data();
    }
    if (imatrix == nullptr && ggml_quantize_requires_imatrix(t)) throw CodedError("EQUANT", type_name(t) + " needs an importance matrix to be quantized");
    const size_t size = bytes_for(t, n);
    Napi::Uint8Array out = Napi::Uint8Array::New(env, size);
    if (n) ggml_quantize_chunk(t, values.Data(), out.Data(), 0, n / per_row, per_row, imatrix);
    return out;
}

}  // namespace

void RegisterCodec(Napi::Env env, Napi::Object exports) {
    codec::g_fp16_inline = codec::fp16_check();
    exports.Set("codecTypeInfo", Napi::Function::New(env, Export<TypeInfo>));
    exports.Set("dequantize", Napi::Function::New(env, Export<Dequantize>));
    exports.Set("quantize", Napi::Function::New(env, Export<Quantize>));
}
