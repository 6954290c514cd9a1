// Shared by the tensor codec's files (codec.cpp, keep_scale.cpp, top_k.cpp, requantize.cpp): ggml
// type traits, keep-scale codes and the thread split. No policy: the caller decides K, the scale
// and what to write.
#pragma once
#include "common.h"
#include "ggml.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace codec {

// ---------------------------------------------------------------------------------------------
// Types (codec.cpp)

bool valid_type(int64_t t);
bool can_quantize(ggml_type t);      // the types ggml_quantize_chunk knows (it asserts on any other)
bool can_dequantize(ggml_type t);
bool uses_imatrix(ggml_type t);      // its quantizer reads an importance matrix when given one
ggml_type checked_type(int64_t t);   // EQUANT for an id that names no type
inline std::string type_name(ggml_type t) { return ggml_type_name(t); }
size_t bytes_for(ggml_type t, int64_t n);   // EUSAGE unless n is a whole number of blocks
void dequantize_into(ggml_type t, const uint8_t * src, float * dst, int64_t n);
int get_threads(const Napi::Object & o);    // the `threads` option (default: every core)

// ---------------------------------------------------------------------------------------------
// Files (codec.cpp): the `read` / `write` options of patchTensor and selectTopK. A tensor's bytes
// are read from (written to) a file at an offset on the worker thread, so that the JS thread
// neither reads nor copies them. Not on Windows (EUSAGE: the caller reads them itself).

struct FileAt { int fd = -1; int64_t offset = 0; };
FileAt file_at(const Napi::Object & o, const char * key);   // { fd, offset }; fd -1 when the option is absent
const char * errno_code(int e);                             // ENOSPC, EFBIG, EDQUOT or EIO
void read_fully(const FileAt & f, uint8_t * p, size_t n);   // EIO at an early end of file
void write_fully(const FileAt & f, const uint8_t * p, size_t n);
// Starts writing [offset, offset + n) of a file to its disk without waiting (Linux:
// sync_file_range with SYNC_FILE_RANGE_WRITE; elsewhere nothing), so that the fsync that commits
// the file finds its pages already written or on their way instead of writing them all then.
// Failures are left to that fsync, which reports them.
void start_writeback(int fd, int64_t offset, size_t n);

// `size` bytes of a file from an offset, read-only, for as long as the view lives: the file's
// pages mapped (no copy), or read into memory where mapping fails. EIO when the file is shorter.
// A mapping shares llama.cpp's own exposure (it maps models by default): a file cut shorter by
// another process while it is mapped faults at the first access past its new end.
class FileView {
public:
    FileView(const FileAt & f, size_t size);
    ~FileView();
    FileView(const FileView &) = delete;
    FileView & operator=(const FileView &) = delete;
    const uint8_t * data() const { return data_; }
private:
    void * map_ = nullptr;
    size_t map_len_ = 0;
    std::vector<uint8_t> copy_;
    const uint8_t * data_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Inline arithmetic of the per-weight loops (requantize.cpp, keep_scale.cpp): the library calls
// they replace (lround, popcount without -mpopcnt, ggml's exported fp16 conversions) dominated them.

// std::lround for finite |x| < 2^62 (x - trunc(x) is exact): half away from zero.
inline long round_half_away(double x) {
    const long i = (long) x;
    const double f = x - (double) i;
    return i + (f >= 0.5) - (f <= -0.5);   // without a branch: the direction is a coin toss per weight
}

inline int popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (int) ((x * 0x0101010101010101ull) >> 56);
}

// fp16 <-> fp32 as ggml-base computes them (ggml-impl.h ggml_compute_fp16_to_fp32 /
// ggml_compute_fp32_to_fp16), inline. At load, fp16_check() compares them with the library's
// exported ggml_fp16_to_fp32 / ggml_fp32_to_fp16 (every fp16 value, and fp32 values around every
// fp16 value, specials and NaNs); where the library differs (another build), the library's are used.
extern bool g_fp16_inline;
bool fp16_check();

inline float f32_bits(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }
inline uint32_t bits_f32(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }

inline float fp16_to_fp32_inline(uint16_t h) {
    const uint32_t w = (uint32_t) h << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;
    const float normalized_value = f32_bits((two_w >> 4) + (UINT32_C(0xE0) << 23)) * 0x1.0p-112f;
    const float denormalized_value = f32_bits((two_w >> 17) | (UINT32_C(126) << 23)) - 0.5f;
    return f32_bits(sign | (two_w < (UINT32_C(1) << 27) ? bits_f32(denormalized_value) : bits_f32(normalized_value)));
}

inline uint16_t fp32_to_fp16_inline(float f) {
    float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = bits_f32(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    uint32_t bias = shl1_w & UINT32_C(0xFF000000);
    if (bias < UINT32_C(0x71000000)) bias = UINT32_C(0x71000000);
    base = f32_bits((bias >> 1) + UINT32_C(0x07800000)) + base;
    const uint32_t bits = bits_f32(base);
    const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
    const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t) ((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT16_C(0x7E00) : nonsign));
}

inline float fp16_to_fp32(uint16_t h) { return g_fp16_inline ? fp16_to_fp32_inline(h) : ggml_fp16_to_fp32(h); }
inline uint16_t fp32_to_fp16(float f) { return g_fp16_inline ? fp32_to_fp16_inline(f) : ggml_fp32_to_fp16(f); }
inline float load_fp16(const uint8_t * p) { uint16_t h; memcpy(&h, p, 2); return fp16_to_fp32(h); }

// bf16 as ggml computes it (ggml_compute_bf16_to_fp32 / ggml_compute_fp32_to_bf16: NaN kept quiet)
inline float bf16_to_fp32(uint16_t h) { return f32_bits((uint32_t) h << 16); }
inline uint16_t fp32_to_bf16(float f) {
    const uint32_t i = bits_f32(f);
    if ((i & 0x7fffffff) > 0x7f800000) return (uint16_t) ((i >> 16) | 64);
    return (uint16_t) ((i + (0x7fff + ((i >> 16) & 1))) >> 16);
}

// ---------------------------------------------------------------------------------------------
// Keep-scale codes (keep_scale.cpp): a weight of these formats is a * q + b with an integer code q
// in [qmin, qmax] and (a, b) fixed by the block's scales.

struct CodeSlot { float a; float b; int qmin; int qmax; int q; };
bool keep_scale_supported(ggml_type t);
// (read_slot and write_code inline: they run once per selected weight; bit layouts as ggml-quants.c has them)
inline float h2f(const uint8_t * p) { return load_fp16(p); }

inline void scale_min_k4(int j, const uint8_t * q, uint8_t * d, uint8_t * m) {
    if (j < 4) { *d = q[j] & 63; *m = q[j + 4] & 63; }
    else { *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4); }
}

// Reads the slot of weight p (0 <= p < block size) of one block.
inline CodeSlot read_slot(ggml_type t, const uint8_t * b, int p) {
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

// Writes code q of weight p of one block.
inline void write_code(ggml_type t, uint8_t * b, int p, int q) {
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
int rescale_sub_block_size(ggml_type t);   // 0: the type has no sub-block scales to raise
// Sub-block rescale in two steps (tg: the sub-block's targets): its scale (and min) raised by the
// fewest steps that cover its targets (false: it cannot be raised far enough; only the sub-block's
// own scale bits are written), then its codes re-rounded under it
bool fit_sub_block_scale(ggml_type t, uint8_t * block, int sub, const float * tg);
void reround_sub_block_codes(ggml_type t, uint8_t * block, int sub, const float * tg);
// A lower bound, without re-rounding, of what reround_sub_block_codes under the block's present
// scales makes of sub-block `sub`'s share of the squared error (the sum over its weights of (ggml's
// dequantized value - target)^2 in double); 0 where it cannot say
double rerounded_error_bound(ggml_type t, const uint8_t * block, int sub, const float * tg);
// Block rescale (tg: the block's targets): the super-block scales raised just enough and every
// sub-block's scale fitted (false, block unchanged: none fits); its codes are then every
// sub-block's reround_sub_block_codes
bool rescale_block_scales(ggml_type t, uint8_t * block, const float * tg);

// ---------------------------------------------------------------------------------------------
// Threads

// Runs body(t) for t < nt, t = 0 on the calling thread and the others on new threads; after all
// have returned, rethrows the first exception one of them threw.
template <typename F>
void run_threads(int nt, F && body) {
    std::vector<std::exception_ptr> errors((size_t) nt);
    auto guarded = [&](int t) { try { body(t); } catch (...) { errors[(size_t) t] = std::current_exception(); } };
    std::vector<std::thread> threads;
    for (int t = 1; t < nt; t++) threads.emplace_back(guarded, t);
    guarded(0);
    for (auto & th : threads) th.join();
    for (auto & e : errors) if (e) std::rethrow_exception(e);
}

// Runs fn(thread, begin, end) over [begin, end) split into n_threads ranges whose inner cut
// points are multiples of `align` (absolute); ranges shorter than min_per_thread are not split.
template <typename F>
void parallel_ranges(int n_threads, int64_t begin, int64_t end, int64_t align, int64_t min_per_thread, F && fn) {
    const int64_t len = end - begin;
    int nt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, len / std::max<int64_t>(1, min_per_thread)));
    if (nt <= 1) { fn(0, begin, end); return; }
    std::vector<int64_t> cut((size_t) nt + 1);
    cut[0] = begin; cut[nt] = end;
    for (int t = 1; t < nt; t++) {
        int64_t c = begin + len * t / nt;
        c -= c % align;
        cut[t] = std::min(end, std::max(cut[t - 1], c));
    }
    run_threads(nt, [&](int t) { fn(t, cut[t], cut[t + 1]); });
}

// Runs fn(thread, begin, end) over [begin, end) cut at the absolute multiples of `block`, the pieces
// handed out in order to whichever of n_threads threads asks next (a thread may get several, in
// increasing order, not adjacent). An equal split waits at the join for a thread that started late
// or lost its CPU to another (on a 2-vCPU VM a new thread was measured to start 0.05-5 ms after it
// was asked for); this does not. Pieces shorter than one block are not split. fn may keep per-thread
// state by `thread`, but its result must not depend on which thread ran which piece.
template <typename F>
void parallel_blocks(int n_threads, int64_t begin, int64_t end, int64_t block, F && fn) {
    if (end <= begin) return;
    const int64_t b0 = begin / block, nb = (end - 1) / block - b0 + 1;
    const int nt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, nb));
    if (nt <= 1) { fn(0, begin, end); return; }
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};   // the others take no new piece once one has thrown
    run_threads(nt, [&](int t) {
        try {
            for (int64_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1, std::memory_order_relaxed)) < nb;)
                fn(t, std::max(begin, (b0 + i) * block), std::min(end, (b0 + i + 1) * block));
        } catch (...) { failed.store(true, std::memory_order_relaxed); throw; }
    });
}

}  // namespace codec
