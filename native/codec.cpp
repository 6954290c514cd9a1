// The tensor codec: type information, dequantization and quantization through ggml's own type
// traits, the exact top-K selection of one tensor's scores, and the requantization of the blocks
// that hold selected weights. No policy here: the caller decides K, the scale and what to write.
#include "common.h"
#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <exception>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

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
//
// A score is |w| * colWeight[column]. Groups are one matrix (or one row) of a tensor, scanned
// row by row so the column index needs no division. Large groups are split over threads at
// multiples of 64 weights (so no two threads write the same mask byte); the result does not
// depend on the number of threads.

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
    std::vector<std::exception_ptr> errors((size_t) nt);
    std::vector<std::thread> threads;
    for (int t = 1; t < nt; t++) threads.emplace_back([&, t]() { try { fn(t, cut[t], cut[t + 1]); } catch (...) { errors[t] = std::current_exception(); } });
    try { fn(0, cut[0], cut[1]); } catch (...) { errors[0] = std::current_exception(); }
    for (auto & th : threads) th.join();
    for (auto & e : errors) if (e) std::rethrow_exception(e);
}

// The scores of one group: weights w[i - base] for flat indices i in [base, base + len), column
// weights col[(i - base) % n_in].
constexpr int64_t kChunk = 4096;

struct ScoreGroup {
    const float * w;
    const double * col;
    int64_t n_in;
    int64_t base;
    int64_t len;
    // calls f(first, keys, count) for consecutive chunks of [a, b): keys[x] is the key of flat
    // index first + x, 0 when not eligible (zero, -0, NaN). Rows are computed in straight runs
    // (no division, vectorizable).
    template <typename F>
    void chunks(int64_t a, int64_t b, F && f) const {
        alignas(64) uint64_t keys[kChunk];
        int64_t j = (a - base) % n_in;
        const float * wp = w + (a - base);
        for (int64_t first = a; first < b;) {
            const int64_t count = std::min<int64_t>(kChunk, b - first);
            int64_t x = 0;
            while (x < count) {
                const int64_t run = std::min<int64_t>(count - x, n_in - j);
                const double * c = col + j;
                const float * ww = wp + x;
                uint64_t * kk = keys + x;
                for (int64_t y = 0; y < run; y++) {
                    const double sc = std::fabs((double) ww[y]) * c[y];
                    uint64_t k; memcpy(&k, &sc, 8);
                    kk[y] = sc > 0 ? k : 0;
                }
                x += run; j += run;
                if (j == n_in) j = 0;
            }
            f(first, (const uint64_t *) keys, count);
            first += count; wp += count;
        }
    }
};

inline void set_mask_bit(uint8_t * m, int64_t i) { m[i >> 3] |= (uint8_t) (1u << (i & 7)); }

constexpr int64_t kMinPerThread = 1 << 16;
// A threshold bucket with at most this many scores is resolved by nth_element on its keys.
constexpr int64_t kCollectLimitDefault = 1 << 16;

// The threshold of one K inside a group: keys above T are taken, and the first `take` keys equal
// to T (lowest flat index). mode -2: take none; -1: take every eligible key.
struct Threshold { int mode = 0; uint64_t T = 0; int64_t take = 0; };

// The threshold that takes the r largest of `keys` (1 <= r <= keys.size()): the r-th largest, and
// how many keys equal to it are taken. Reorders keys.
Threshold rth_largest(std::vector<uint64_t> & keys, int64_t r) {
    std::nth_element(keys.begin(), keys.begin() + (r - 1), keys.end(), std::greater<uint64_t>());
    const uint64_t T = keys[(size_t) r - 1];
    int64_t greater = 0;
    for (uint64_t v : keys) greater += v > T;
    return Threshold{0, T, r - greater};
}

// Marks [a, b) for every K; keys equal to a threshold are passed to tie(q, i) instead.
template <typename Tie>
void mark_range(const ScoreGroup & g, int64_t a, int64_t b, const std::vector<Threshold> & th, std::vector<std::vector<uint8_t>> & masks, Tie && tie) {
    g.chunks(a, b, [&](int64_t first, const uint64_t * keys, int64_t count) {
        for (size_t q = 0; q < th.size(); q++) {
            const Threshold t = th[q];
            if (t.mode == -2) continue;
            uint8_t * m = masks[q].data();
            // every eligible key (mode -1) is "above" T = 0; there are no ties then (a key equal to 0 is not eligible)
            const uint64_t T = t.mode == -1 ? 0 : t.T;
            const bool ties = t.mode != -1;
            auto one = [&](int64_t x) {
                const uint64_t k = keys[x];
                if (k > T) set_mask_bit(m, first + x);
                else if (ties && k == T) tie(q, first + x);
            };
            int64_t x = 0;
            for (; x < count && ((first + x) & 7); x++) one(x);
            // whole mask bytes: 8 comparisons make one byte
            for (; x + 8 <= count; x += 8) {
                const uint64_t * k = keys + x;
                unsigned byte = 0, equal = 0;
                for (int j = 0; j < 8; j++) { byte |= (unsigned) (k[j] > T) << j; equal |= (unsigned) (k[j] == T); }
                if (byte) m[(first + x) >> 3] |= (uint8_t) byte;
                if (ties && equal) for (int j = 0; j < 8; j++) if (k[j] == T) tie(q, first + x + j);
            }
            for (; x < count; x++) one(x);
        }
    });
}

// Marks every K's threshold over the group, the pass split over nt threads: keys above the
// threshold in parallel; keys equal to it are noted per thread and the first `take` of them
// (lowest flat index) are marked afterwards.
void mark_with_thresholds(const ScoreGroup & g, const std::vector<Threshold> & th, std::vector<std::vector<uint8_t>> & masks, int nt) {
    const int64_t begin = g.base, end = g.base + g.len;
    const size_t nk = th.size();
    std::vector<std::vector<int64_t>> ties((size_t) nt * nk);
    parallel_ranges(nt, begin, end, 64, kMinPerThread, [&](int t, int64_t a, int64_t b) {
        mark_range(g, a, b, th, masks, [&](size_t q, int64_t i) { ties[(size_t) t * nk + q].push_back(i); });
    });
    for (size_t q = 0; q < nk; q++) {
        int64_t left = th[q].take;
        for (int t = 0; t < nt && left > 0; t++)
            for (int64_t i : ties[(size_t) t * nk + q]) { if (left-- <= 0) break; set_mask_bit(masks[q].data(), i); }
    }
}

// Small groups: the eligible keys are copied and nth_element finds each threshold.
void mark_top_small(const ScoreGroup & g, const std::vector<int64_t> & ks, std::vector<std::vector<uint8_t>> & masks, std::vector<uint64_t> & scratch) {
    scratch.clear();
    g.chunks(g.base, g.base + g.len, [&](int64_t, const uint64_t * keys, int64_t count) {
        for (int64_t x = 0; x < count; x++) if (keys[x]) scratch.push_back(keys[x]);
    });
    const int64_t eligible = (int64_t) scratch.size();
    std::vector<Threshold> th(ks.size());
    for (size_t q = 0; q < ks.size(); q++) {
        const int64_t k = ks[q];
        if (k <= 0) { th[q].mode = -2; continue; }
        if (k >= eligible) { th[q].mode = -1; continue; }
        th[q] = rth_largest(scratch, k);
    }
    mark_with_thresholds(g, th, masks, 1);
}

// Large groups, first try: each threshold estimated from a stratified sample of the scores, then
// one pass counts the keys above a bound and collects those in a window around the estimate
// (+-4 standard deviations of the sample rank). When the k-th largest falls inside the window,
// nth_element there gives it exactly; otherwise (rare; or a window too large) that K goes to the
// histogram path. Groups too small to sample are left to it.
// tight (tests): no margin, so windows miss often and the fallback runs.
void sample_thresholds(const ScoreGroup & g, const std::vector<int64_t> & ks, std::vector<Threshold> & th, std::vector<char> & resolved, int nt, bool tight) {
    const int64_t len = g.len, nk = (int64_t) ks.size();
    const int64_t s = std::min<int64_t>(65536, len / 16);
    if (s < 1024) return;
    std::vector<uint64_t> sample((size_t) s);
    for (int64_t x = 0; x < s; x++) {
        // one score from each of s equal strata, at a pseudo-random place inside it (a fixed
        // stride would see only some columns when it divides the row width)
        const int64_t lo = (x * len) / s, hi = ((x + 1) * len) / s;
        const int64_t i = lo + (int64_t) (((uint64_t) (x + 1) * 0x9E3779B97F4A7C15ull) >> 33) % std::max<int64_t>(1, hi - lo);
        const double sc = std::fabs((double) g.w[i]) * g.col[i % g.n_in];
        uint64_t k = 0; if (sc > 0) memcpy(&k, &sc, 8);
        sample[(size_t) x] = k;
    }
    std::sort(sample.begin(), sample.end(), std::greater<uint64_t>());
    struct Window { uint64_t lo = 1, hi = UINT64_MAX; bool active = false; };
    std::vector<Window> win((size_t) nk);
    for (int64_t q = 0; q < nk; q++) {
        const int64_t k = ks[(size_t) q];
        if (k <= 0) { th[(size_t) q].mode = -2; resolved[(size_t) q] = 1; continue; }
        const double p = std::min(1.0, (double) k / (double) len), r = p * (double) s;
        const double m = tight ? 0.0 : 4.0 * std::sqrt((double) s * p * (1 - p)) + 4.0;
        const int64_t a = (int64_t) std::floor(r - m), b = (int64_t) std::ceil(r + m);
        Window & w = win[(size_t) q];
        w.hi = a < 0 ? UINT64_MAX : sample[(size_t) a];
        w.lo = b >= s ? 1 : std::max<uint64_t>(1, sample[(size_t) b]);
        w.active = w.lo <= w.hi;
    }
    const int64_t cap = std::max<int64_t>(kCollectLimitDefault, len / 16) / nt + 1;
    std::vector<int64_t> above((size_t) (nt * nk), 0), zeros((size_t) nt, 0);
    std::vector<char> overflow((size_t) (nt * nk), 0);
    std::vector<std::vector<uint64_t>> got((size_t) (nt * nk));
    parallel_ranges(nt, g.base, g.base + len, 64, kMinPerThread, [&](int t, int64_t a, int64_t b) {
        int64_t z = 0;
        g.chunks(a, b, [&](int64_t, const uint64_t * keys, int64_t count) {
            for (int64_t x = 0; x < count; x++) z += keys[x] == 0;
            for (int64_t q = 0; q < nk; q++) {
                const Window w = win[(size_t) q];
                if (!w.active) continue;
                const size_t slot = (size_t) (t * nk + q);
                if (overflow[slot]) continue;
                int64_t up = 0;
                std::vector<uint64_t> & out = got[slot];
                const uint64_t lo = w.lo, span = w.hi - w.lo;   // lo <= k <= hi  <=>  k - lo <= span (unsigned)
                for (int64_t x = 0; x < count; x++) {
                    const uint64_t k = keys[x];
                    up += k > w.hi;
                    if (k - lo <= span) out.push_back(k);
                }
                above[slot] += up;
                if ((int64_t) out.size() > cap) overflow[slot] = 1;
            }
        });
        zeros[(size_t) t] = z;
    });
    int64_t eligible = len;
    for (int64_t z : zeros) eligible -= z;
    for (int64_t q = 0; q < nk; q++) {
        if (resolved[(size_t) q]) continue;
        const int64_t k = ks[(size_t) q];
        if (k >= eligible) { th[(size_t) q].mode = -1; resolved[(size_t) q] = 1; continue; }
        if (!win[(size_t) q].active) continue;
        int64_t up = 0; bool over = false; size_t n = 0;
        for (int t = 0; t < nt; t++) { up += above[(size_t) (t * nk + q)]; over |= overflow[(size_t) (t * nk + q)] != 0; n += got[(size_t) (t * nk + q)].size(); }
        if (over || !(up < k && k <= up + (int64_t) n)) continue;
        std::vector<uint64_t> keys; keys.reserve(n);
        for (int t = 0; t < nt; t++) { auto & v = got[(size_t) (t * nk + q)]; keys.insert(keys.end(), v.begin(), v.end()); }
        th[(size_t) q] = rth_largest(keys, k - up);
        resolved[(size_t) q] = 1;
    }
}

// Large groups, the K that sampling did not resolve: a 16-bit histogram of the top bits (one pass
// for every K), refined 16 bits at a time while the threshold's bucket is large, then the
// bucket's keys are collected and nth_element gives the exact threshold. Every pass is split over
// threads.
void histogram_thresholds(const ScoreGroup & g, const std::vector<int64_t> & ks, std::vector<Threshold> & th, const std::vector<char> & resolved, int nt, int64_t collect_limit) {
    const int64_t begin = g.base, end = g.base + g.len;
    const size_t nk = ks.size();
    // per K: the known top bits of its threshold (prefix over bits >= shift), how many of the
    // K still to take inside that prefix, and how many keys carry the prefix
    struct State { uint64_t prefix = 0; int shift = 64; int64_t remaining = 0; int64_t in_bucket = 0; };
    std::vector<State> st(nk);
    // pass 1: top 16 bits (zero keys land in bucket 0 and are subtracted)
    std::vector<std::vector<uint64_t>> hists((size_t) nt, std::vector<uint64_t>(65536, 0));
    std::vector<int64_t> zeros((size_t) nt, 0);
    parallel_ranges(nt, begin, end, 64, kMinPerThread, [&](int t, int64_t a, int64_t b) {
        uint64_t * h = hists[(size_t) t].data();
        int64_t z = 0;
        g.chunks(a, b, [&](int64_t, const uint64_t * keys, int64_t count) {
            for (int64_t x = 0; x < count; x++) { h[keys[x] >> 48]++; z += keys[x] == 0; }
        });
        zeros[(size_t) t] = z;
    });
    std::vector<uint64_t> hist(65536, 0);
    for (auto & h : hists) for (size_t i = 0; i < 65536; i++) hist[i] += h[i];
    for (int64_t z : zeros) hist[0] -= (uint64_t) z;
    int64_t eligible = 0;
    for (size_t i = 0; i < 65536; i++) eligible += (int64_t) hist[i];
    // walk a histogram from the top: the bucket holding the `remaining`-th largest
    auto walk = [](const uint64_t * h, int64_t remaining, int64_t & cum_above) {
        int64_t cum = 0; int b = 65535;
        for (; b > 0; b--) { if (cum + (int64_t) h[b] >= remaining) break; cum += (int64_t) h[b]; }
        cum_above = cum;
        return b;
    };
    for (size_t q = 0; q < nk; q++) {
        const int64_t k = ks[q];
        State & s = st[q];
        if (resolved[q]) continue;   // by sampling: left as it is
        if (k <= 0) { th[q].mode = -2; continue; }
        if (k >= eligible) { th[q].mode = -1; continue; }
        int64_t above = 0;
        const int b = walk(hist.data(), k, above);
        s.prefix = (uint64_t) b << 48; s.shift = 48; s.remaining = k - above; s.in_bucket = (int64_t) hist[(size_t) b];
    }
    // refine: 16 more bits at a time for the K whose bucket is still large
    for (;;) {
        std::vector<size_t> refine;
        for (size_t q = 0; q < nk; q++) if (!resolved[q] && th[q].mode == 0 && st[q].shift > 0 && st[q].in_bucket > collect_limit) refine.push_back(q);
        if (refine.empty()) break;
        const size_t nr = refine.size();
        std::vector<std::vector<uint64_t>> rh((size_t) nt * nr, std::vector<uint64_t>(65536, 0));
        parallel_ranges(nt, begin, end, 64, kMinPerThread, [&](int t, int64_t a, int64_t b) {
            g.chunks(a, b, [&](int64_t, const uint64_t * keys, int64_t count) {
                for (size_t r = 0; r < nr; r++) {
                    const State & s = st[refine[r]];
                    uint64_t * h = rh[(size_t) t * nr + r].data();
                    const uint64_t want = s.prefix >> s.shift;
                    const int shift = s.shift, low = s.shift - 16;
                    for (int64_t x = 0; x < count; x++) { const uint64_t k = keys[x]; if (k && (k >> shift) == want) h[(k >> low) & 0xFFFF]++; }
                }
            });
        });
        for (size_t r = 0; r < nr; r++) {
            State & s = st[refine[r]];
            std::vector<uint64_t> & h = rh[r];
            for (int t = 1; t < nt; t++) for (size_t i = 0; i < 65536; i++) h[i] += rh[(size_t) t * nr + r][i];
            int64_t above = 0;
            const int b = walk(h.data(), s.remaining, above);
            s.shift -= 16; s.prefix |= (uint64_t) b << s.shift; s.remaining -= above; s.in_bucket = (int64_t) h[(size_t) b];
        }
    }
    // collect the keys of each threshold bucket and find the threshold
    std::vector<size_t> collect;
    for (size_t q = 0; q < nk; q++) {
        if (resolved[q] || th[q].mode != 0) continue;
        if (st[q].shift == 0) { th[q].T = st[q].prefix; th[q].take = st[q].remaining; continue; }   // every key of the bucket equals the prefix
        collect.push_back(q);
    }
    if (!collect.empty()) {
        const size_t nc = collect.size();
        std::vector<std::vector<uint64_t>> got((size_t) nt * nc);
        parallel_ranges(nt, begin, end, 64, kMinPerThread, [&](int t, int64_t a, int64_t b) {
            g.chunks(a, b, [&](int64_t, const uint64_t * keys, int64_t count) {
                for (size_t r = 0; r < nc; r++) {
                    const State & s = st[collect[r]];
                    std::vector<uint64_t> & out = got[(size_t) t * nc + r];
                    const uint64_t want = s.prefix >> s.shift;
                    const int shift = s.shift;
                    for (int64_t x = 0; x < count; x++) { const uint64_t k = keys[x]; if (k && (k >> shift) == want) out.push_back(k); }
                }
            });
        });
        for (size_t r = 0; r < nc; r++) {
            std::vector<uint64_t> keys;
            for (int x = 0; x < nt; x++) { auto & v = got[(size_t) x * nc + r]; keys.insert(keys.end(), v.begin(), v.end()); std::vector<uint64_t>().swap(v); }
            th[collect[r]] = rth_largest(keys, st[collect[r]].remaining);
        }
    }
}


void mark_top_radix(const ScoreGroup & g, const std::vector<int64_t> & ks, std::vector<std::vector<uint8_t>> & masks, int n_threads, int64_t collect_limit, int sampling) {
    const size_t nk = ks.size();
    int nt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, g.len / kMinPerThread));
    std::vector<Threshold> th(nk);
    std::vector<char> resolved(nk, 0);
    if (sampling) sample_thresholds(g, ks, th, resolved, nt, sampling == 2);
    bool all_resolved = true;
    for (char r : resolved) all_resolved &= r != 0;
    if (!all_resolved) histogram_thresholds(g, ks, th, resolved, nt, collect_limit);
    mark_with_thresholds(g, th, masks, nt);
}


// ---------------------------------------------------------------------------------------------
// Requantizing one block toward its target: selected weights times the scale, the others as they
// were. 'best' keeps the candidate closest to the target (least squared error; ties: fewer changed
// bytes) among ggml's plain requantization, keep-scale re-rounding and an importance-weighted
// requantization (selected weights x16); 'plain' and 'keep-scale' build only that candidate.

enum Strategy { kBest = 0, kPlain = 1, kKeepScale = 2 };
enum Candidate { kCandPlain = 0, kCandKeepScale = 1, kCandWeighted = 2, kCandExact = 3 };

Strategy parse_strategy(const std::string & s, ggml_type t) {
    if (s != "best" && s != "plain" && s != "keep-scale") throw CodedError("EUSAGE", "strategy must be 'best', 'plain' or 'keep-scale'");
    if (s == "keep-scale" && !keep_scale_supported(t)) throw CodedError("EQUANT", "keep-scale re-rounding does not support " + type_name(t));
    return s == "best" ? kBest : s == "plain" ? kPlain : kKeepScale;
}

struct BlockScratch {
    std::vector<uint8_t> cand, best;
    std::vector<float> deq, weights;
    void init(int64_t bs, size_t ts) { cand.resize(ts); best.resize(ts); deq.resize((size_t) bs); weights.resize((size_t) bs); }
};

// sel: mask bits, bit sel_base + j is weight j of the block. im: the block's importance (or null).
// Writes the kept candidate to `out` (ts bytes) and returns its kind.
int requant_block(ggml_type t, int64_t bs, size_t ts, const uint8_t * orig, const float * tg, const float * im,
                  const uint8_t * sel, int64_t sel_base, Strategy strategy, BlockScratch & sc, uint8_t * out) {
    auto is_sel = [&](int64_t j) { const int64_t i = sel_base + j; return (sel[i >> 3] >> (i & 7)) & 1; };
    double best_err = INFINITY; int best_diff = 1 << 30; int best_kind = -1;
    auto consider = [&](int kind) {
        dequantize_into(t, sc.cand.data(), sc.deq.data(), bs);
        double err = 0;
        for (int64_t j = 0; j < bs; j++) { double d = (double) sc.deq[j] - (double) tg[j]; err += d * d; }
        if (!std::isfinite(err)) return;
        int diff = 0; for (size_t k = 0; k < ts; k++) diff += sc.cand[k] != orig[k];
        if (err < best_err || (err == best_err && diff < best_diff)) { best_err = err; best_diff = diff; best_kind = kind; sc.best = sc.cand; }
    };
    if (strategy != kKeepScale) {
        ggml_quantize_chunk(t, tg, sc.cand.data(), 0, 1, bs, im);
        consider(kCandPlain);
    }
    if (strategy != kPlain && keep_scale_supported(t)) {
        memcpy(sc.cand.data(), orig, ts);
        for (int j = 0; j < bs; j++) {
            if (!is_sel(j)) continue;
            CodeSlot s = read_slot(t, sc.cand.data(), j);
            if (!(s.a != 0) || !std::isfinite(s.a) || !std::isfinite(s.b)) continue;
            const double qf = ((double) tg[j] - s.b) / s.a;
            int q0 = (int) std::lround(std::max((double) s.qmin, std::min((double) s.qmax, qf)));
            int bestq = s.q; double beste = std::fabs((double) (s.a * s.q + s.b) - tg[j]);
            for (int q = q0 - 1; q <= q0 + 1; q++) {
                if (q < s.qmin || q > s.qmax) continue;
                double e = std::fabs((double) (s.a * q + s.b) - tg[j]);
                if (e < beste) { beste = e; bestq = q; }
            }
            if (bestq != s.q) write_code(t, sc.cand.data(), j, bestq);
        }
        consider(kCandKeepScale);
    }
    if (strategy == kBest && uses_imatrix(t)) {
        for (int j = 0; j < bs; j++) sc.weights[j] = (im ? std::max(im[j], 1e-8f) : 1.0f) * (is_sel(j) ? 16.0f : 1.0f);
        ggml_quantize_chunk(t, tg, sc.cand.data(), 0, 1, bs, sc.weights.data());
        consider(kCandWeighted);
    }
    if (best_kind < 0) { memcpy(out, orig, ts); return kCandPlain; }
    memcpy(out, sc.best.data(), ts);
    return best_kind;
}

// ---------------------------------------------------------------------------------------------
// N-API helpers

// The factor of selected weights (0 prunes): a finite number.
double get_scale(const Napi::Object & o) {
    Napi::Value v = o.Get("scale");
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) throw CodedError("EUSAGE", "scale must be a finite number");
    return v.As<Napi::Number>().DoubleValue();
}

Strategy get_strategy(const Napi::Object & o, ggml_type t) {
    return parse_strategy(o.Get("strategy").IsString() ? o.Get("strategy").As<Napi::String>().Utf8Value() : "best", t);
}

// The `type` option, one ggml can both dequantize and quantize.
ggml_type requantizable_type(const Napi::Object & o) {
    const ggml_type t = checked_type(RequireInteger(o, "type"));
    if (!can_dequantize(t) || !can_quantize(t)) throw CodedError("EQUANT", "ggml cannot requantize " + type_name(t));
    return t;
}

// An optional importance matrix of n values (null when absent); types that only quantize with one need it.
const float * importance_of(const Napi::Value & v, const char * what, int64_t n, const char * size, ggml_type t) {
    const float * p = nullptr;
    if (!v.IsUndefined() && !v.IsNull()) {
        auto im = RequireTypedArray<float>(v, what);
        if ((int64_t) im.ElementLength() != n) throw CodedError("EUSAGE", std::string(what) + " must hold " + size);
        p = im.Data();
    }
    if (p == nullptr && ggml_quantize_requires_imatrix(t)) throw CodedError("EQUANT", type_name(t) + " needs an importance matrix to be requantized: pass the statistics (their sums of squares are used)");
    return p;
}

// The `threads` option (default: every core).
int get_threads(const Napi::Object & o) {
    if (IsSet(o, "threads")) return (int) std::min<int64_t>(RequireInteger(o, "threads", 1), 1024);
    return (int) std::max(1u, std::thread::hardware_concurrency());
}


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

// selectTopK({ type, data, nIn, rows, matrices, colWeights: Float64Array[], groupBy: 'matrix'|'row',
//              counts: number[], radixMinGroup?, radixBucketLimit?, threads? }): Promise<Uint8Array[][]>
//              (masks[set][count])
// Each mask has one bit per weight (bit i of byte i>>3 is flat index i).
Napi::Value SelectTopK(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("EUSAGE", "selectTopK(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    const ggml_type t = checked_type(RequireInteger(o, "type"));
    if (!can_dequantize(t)) throw CodedError("EQUANT", "ggml cannot dequantize " + type_name(t));
    auto data = RequireTypedArray<uint8_t>(o.Get("data"), "data");
    const int64_t n_in = RequireInteger(o, "nIn", 1), rows = RequireInteger(o, "rows", 1), mats = RequireInteger(o, "matrices", 1);
    const int64_t numel = n_in * rows * mats;
    if (n_in % ggml_blck_size(t) != 0) throw CodedError("EUSAGE", "nIn is not a whole number of " + type_name(t) + " blocks");
    if (data.ByteLength() != bytes_for(t, numel)) throw CodedError("EUSAGE", "data holds " + std::to_string(data.ByteLength()) + " bytes, not the size of a " + type_name(t) + " tensor of " + std::to_string(numel) + " elements");
    Napi::Value cw = o.Get("colWeights");
    if (!cw.IsArray()) throw CodedError("EUSAGE", "colWeights must be an array of Float64Array");
    Napi::Array cwa = cw.As<Napi::Array>();
    std::vector<const double *> cols;
    for (uint32_t i = 0; i < cwa.Length(); i++) {
        auto a = RequireTypedArray<double>(cwa.Get(i), "colWeights[i]");
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
    const int64_t radix_min = OptionalInteger(o, "radixMinGroup", 1 << 20, 1);

    const int n_threads = get_threads(o);
    const int64_t collect_limit = OptionalInteger(o, "radixBucketLimit", kCollectLimitDefault, 1);
    // 1: thresholds first estimated from a sample (default); 0: histogram only; 2: sample with no margin (tests the fallback)
    const int sampling = (int) std::min<int64_t>(OptionalInteger(o, "radixSampling", 1, 0), 2);

    auto result = std::make_shared<std::vector<std::vector<std::vector<uint8_t>>>>();
    const uint8_t * bytes = data.Data();
    auto * w = new TaskWorker(env,
        [=]() {
            result->assign(cols.size(), std::vector<std::vector<uint8_t>>(ks.size(), std::vector<uint8_t>((size_t) ((numel + 7) / 8), 0)));
            const int64_t per_matrix = n_in * rows;
            const size_t row_bytes = bytes_for(t, n_in);
            const bool direct = t == GGML_TYPE_F32 && ((uintptr_t) bytes % alignof(float)) == 0;
            // reused across calls on this worker thread: a fresh buffer per matrix costs page faults
            // (a thread_local named inside the lambdas below would be each thread's own: use the pointer)
            static thread_local std::vector<float> dequant_buffer;
            if (!direct && dequant_buffer.size() < (size_t) per_matrix) dequant_buffer.resize((size_t) per_matrix);
            float * const dequant = dequant_buffer.data();
            struct Release { ~Release() { if (dequant_buffer.capacity() * sizeof(float) > ((size_t) 512 << 20)) std::vector<float>().swap(dequant_buffer); } } release;   // not held past the call when huge
            std::vector<std::vector<uint64_t>> scratch((size_t) n_threads);
            // one matrix at a time: dequantized on all threads (whole rows), then scored per column set
            for (int64_t m = 0; m < mats; m++) {
                const int64_t mbase = m * per_matrix;
                const float * wf;
                if (direct) wf = (const float *) bytes + mbase;
                else {
                    parallel_ranges(n_threads, 0, rows, 1, std::max<int64_t>(1, kMinPerThread / n_in), [&](int, int64_t r0, int64_t r1) {
                        dequantize_into(t, bytes + (size_t) (m * rows + r0) * row_bytes, dequant + r0 * n_in, (r1 - r0) * n_in);
                    });
                    wf = dequant;
                }
                for (size_t s = 0; s < cols.size(); s++) {
                    auto & masks = (*result)[s];
                    const double * col = cols[s] + m * n_in;
                    if (group >= per_matrix) {
                        ScoreGroup g{wf, col, n_in, mbase, per_matrix};
                        if (per_matrix >= radix_min) mark_top_radix(g, ks, masks, n_threads, collect_limit, sampling);
                        else mark_top_small(g, ks, masks, scratch[0]);
                    } else {
                        // one group per row: rows are split over threads 8 at a time (whole mask bytes)
                        parallel_ranges(mbase % 8 == 0 ? n_threads : 1, 0, rows, 8, std::max<int64_t>(8, kMinPerThread / n_in), [&](int th, int64_t r0, int64_t r1) {
                            for (int64_t r = r0; r < r1; r++) {
                                ScoreGroup g{wf + r * n_in, col, n_in, mbase + r * n_in, n_in};
                                if (n_in >= radix_min) mark_top_radix(g, ks, masks, 1, collect_limit, sampling);
                                else mark_top_small(g, ks, masks, scratch[(size_t) th]);
                            }
                        });
                    }
                }
            }
        },
        [result](Napi::Env e) -> Napi::Value {
            Napi::Array out = Napi::Array::New(e, result->size());
            for (size_t s = 0; s < result->size(); s++) {
                Napi::Array per = Napi::Array::New(e, (*result)[s].size());
                for (size_t q = 0; q < (*result)[s].size(); q++) per.Set((uint32_t) q, ToJsArray<Napi::Uint8Array>(e, (*result)[s][q]));
                out.Set((uint32_t) s, per);
            }
            return out;
        });
    w->Keep(data); w->Keep(cwa);
    for (uint32_t i = 0; i < cwa.Length(); i++) w->Keep(cwa.Get(i));
    return w->Start();
}

// requantizeBlocks({ type, blocks: Uint8Array, selected: Uint8Array (one bit per element),
//   scale: number (0 prunes), imatrix?: Float32Array (one per element), strategy: 'plain'|'best' }):
//   Promise<{ bytes, before: Float32Array, after: Float32Array, chosen: Uint8Array (per block:
//   0 plain, 1 keep-scale, 2 weighted, 3 exact) }>
// Target of every block: selected weights times scale, the others unchanged. 'best' keeps, per
// block, the candidate closest to the target (least squared error; ties: fewer changed bytes).
Napi::Value RequantizeBlocks(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("EUSAGE", "requantizeBlocks(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    const ggml_type t = requantizable_type(o);
    auto blocks = RequireTypedArray<uint8_t>(o.Get("blocks"), "blocks");
    const int64_t bs = ggml_blck_size(t); const size_t ts = ggml_type_size(t);
    if (blocks.ByteLength() % ts != 0) throw CodedError("EUSAGE", "blocks is not a whole number of " + type_name(t) + " blocks");
    const int64_t nblocks = (int64_t) (blocks.ByteLength() / ts);
    const int64_t n = nblocks * bs;
    auto selected = RequireTypedArray<uint8_t>(o.Get("selected"), "selected");
    if ((int64_t) selected.ByteLength() != (n + 7) / 8) throw CodedError("EUSAGE", "selected must hold one bit per element of blocks");
    const double scale = get_scale(o);
    Napi::Value iv = o.Get("imatrix");
    const float * imatrix = importance_of(iv, "imatrix", n, "one value per element of blocks", t);
    const Strategy strategy = get_strategy(o, t);

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
            BlockScratch sc; sc.init(bs, ts);
            for (int64_t b = 0; b < nblocks; b++) {
                out->chosen[b] = (uint8_t) requant_block(t, bs, ts, src + b * ts, target.data() + b * bs, imatrix ? imatrix + b * bs : nullptr,
                                                          sel, b * bs, strategy, sc, out->bytes.data() + b * ts);
            }
            if (n) dequantize_into(t, out->bytes.data(), out->after.data(), n);
        },
        [out](Napi::Env e) -> Napi::Value {
            Napi::Object r = Napi::Object::New(e);
            r.Set("bytes", ToJsArray<Napi::Uint8Array>(e, out->bytes));
            r.Set("before", ToJsArray<Napi::Float32Array>(e, out->before));
            r.Set("after", ToJsArray<Napi::Float32Array>(e, out->after));
            r.Set("chosen", ToJsArray<Napi::Uint8Array>(e, out->chosen));
            return r;
        });
    w->Keep(blocks); w->Keep(selected);
    if (imatrix) w->Keep(iv);
    return w->Start();
}

// patchTensor({ type, data: Uint8Array (the whole tensor as stored; rewritten in place), mask:
//   Uint8Array (one bit per weight), nIn, rows, matrices, scale (0 prunes), importance?: Float32Array
//   (one value per column and matrix, nIn * matrices), strategy, threads?, histogram?: { min, max,
//   bins }, ranges?: false, mergeGap?: bytes }): Promise<{ changed: Float64Array (merged byte
//   ranges: offset, length, ...; empty with ranges: false), bytesChanged,
//   blocksTouched, selectedWeights, candidates: Float64Array(4) (blocks kept per candidate kind:
//   plain, keep-scale, weighted, exact), realized: { selected, unchanged, onTarget, ratioCount,
//   ratioSum, below, above, bins: Float64Array (the bins hit: index, count, index, count, ...),
//   others, othersChanged, otherChangeSq, otherValueSq } }>
// Every block holding a selected weight is requantized toward its target as requantizeBlocks does
// (float types: each selected element converted on its own), on all threads; the realized-scale
// figures are accumulated per chunk of blocks and summed in block order, so the result does not
// depend on the number of threads.
namespace patch {

constexpr int64_t kBlocksPerChunk = 1024;

struct Realized {
    double selected = 0, unchanged = 0, on_target = 0, ratio_count = 0, ratio_sum = 0, below = 0, above = 0;
    double others = 0, others_changed = 0, other_change_sq = 0, other_value_sq = 0;
    double blocks_touched = 0, selected_weights = 0;
    double candidates[4] = {0, 0, 0, 0};
    void add(const Realized & o) {
        selected += o.selected; unchanged += o.unchanged; on_target += o.on_target; ratio_count += o.ratio_count; ratio_sum += o.ratio_sum;
        below += o.below; above += o.above; others += o.others; others_changed += o.others_changed;
        other_change_sq += o.other_change_sq; other_value_sq += o.other_value_sq;
        blocks_touched += o.blocks_touched; selected_weights += o.selected_weights;
        for (int k = 0; k < 4; k++) candidates[k] += o.candidates[k];
    }
};

struct Histogram { double min = -1, max = 3; int64_t bins = 0; };

// One element of a float type, with ggml's own conversions (those ggml_quantize_chunk uses).
inline float load_float(ggml_type t, const uint8_t * p) {
    if (t == GGML_TYPE_F32) { float f; memcpy(&f, p, 4); return f; }
    if (t == GGML_TYPE_F16) { ggml_fp16_t h; memcpy(&h, p, 2); return ggml_fp16_to_fp32(h); }
    ggml_bf16_t h; memcpy(&h, p, 2); return ggml_bf16_to_fp32(h);
}
inline void store_float(ggml_type t, float f, uint8_t * p) {
    if (t == GGML_TYPE_F32) { memcpy(p, &f, 4); return; }
    if (t == GGML_TYPE_F16) { ggml_fp16_t h = ggml_fp32_to_fp16(f); memcpy(p, &h, 2); return; }
    ggml_bf16_t h = ggml_fp32_to_bf16(f); memcpy(p, &h, 2);
}

// One weight's before/after into the figures (the same arithmetic as src/patch/realized.ts).
// A histogram of many bins of which few are hit: zero pages from calloc, and the bins hit listed.
struct SparseBins {
    uint32_t * counts = nullptr;
    std::vector<uint32_t> hit;
    explicit SparseBins(int64_t n) { if (n > 0 && !(counts = (uint32_t *) calloc((size_t) n, sizeof(uint32_t)))) throw std::bad_alloc(); }
    ~SparseBins() { free(counts); }
    SparseBins(const SparseBins &) = delete;
    SparseBins & operator=(const SparseBins &) = delete;
    inline void add(size_t i) { if (counts[i]++ == 0) hit.push_back((uint32_t) i); }
};

inline void account(Realized & r, SparseBins & bins, const Histogram & h, bool selected, float before, float after, double scale) {
    const double b = before, a = after;
    if (selected) {
        r.selected++;
        if (a == b || (std::isnan(a) && std::isnan(b))) r.unchanged++;
        const float target = scale == 0.0 ? 0.0f : (float) (b * scale);
        if (a == (double) target) r.on_target++;
        if (b != 0 && std::isfinite(b) && std::isfinite(a)) {
            const double ratio = a / b;
            r.ratio_sum += ratio; r.ratio_count++;
            if (h.bins > 0) {
                if (ratio < h.min) r.below++;
                else if (ratio >= h.max) r.above++;
                else bins.add((size_t) ((ratio - h.min) / (h.max - h.min) * (double) h.bins));   // >= 0: truncation is floor
            }
        }
    } else {
        r.others++;
        if (a != b) { r.others_changed++; r.other_change_sq += (a - b) * (a - b); }
        r.other_value_sq += b * b;
    }
}

}  // namespace patch

Napi::Value PatchTensor(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw CodedError("EUSAGE", "patchTensor(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    const ggml_type t = requantizable_type(o);
    auto data = RequireTypedArray<uint8_t>(o.Get("data"), "data");
    auto mask = RequireTypedArray<uint8_t>(o.Get("mask"), "mask");
    const int64_t n_in = RequireInteger(o, "nIn", 1), rows = RequireInteger(o, "rows", 1), mats = RequireInteger(o, "matrices", 1);
    if (n_in > (int64_t) 1 << 40 || rows > (int64_t) 1 << 40 || mats > (int64_t) 1 << 20 || n_in * rows > ((int64_t) 1 << 52) / mats) throw CodedError("EUSAGE", "tensor shape too large");
    const int64_t numel = n_in * rows * mats, per_matrix = n_in * rows;
    const int64_t bs = ggml_blck_size(t); const size_t ts = ggml_type_size(t);
    if (n_in % bs != 0) throw CodedError("EUSAGE", "nIn is not a whole number of " + type_name(t) + " blocks");
    if (data.ByteLength() != bytes_for(t, numel)) throw CodedError("EUSAGE", "data holds " + std::to_string(data.ByteLength()) + " bytes, not the size of a " + type_name(t) + " tensor of " + std::to_string(numel) + " elements");
    if ((int64_t) mask.ByteLength() != (numel + 7) / 8) throw CodedError("EUSAGE", "mask must hold one bit per weight");
    const double scale = get_scale(o);
    Napi::Value iv = o.Get("importance");
    const float * importance = importance_of(iv, "importance", n_in * mats, "nIn * matrices values", t);
    const Strategy strategy = get_strategy(o, t);
    const int n_threads = get_threads(o);
    // changed byte ranges: not returned at all (ranges: false; bytesChanged still is), or merged
    // across gaps of up to mergeGap unchanged bytes (an undo journal wants few records)
    const bool want_ranges = !o.Has("ranges") || o.Get("ranges").IsUndefined() || o.Get("ranges").ToBoolean().Value();
    const int64_t merge_gap = OptionalInteger(o, "mergeGap", 0, 0);
    patch::Histogram hist;
    Napi::Value hv = o.Get("histogram");
    if (hv.IsObject()) {
        Napi::Object ho = hv.As<Napi::Object>();
        hist.min = ho.Get("min").ToNumber().DoubleValue(); hist.max = ho.Get("max").ToNumber().DoubleValue();
        hist.bins = RequireInteger(ho, "bins", 1);
        if (!(hist.max > hist.min) || hist.bins > (1 << 24)) throw CodedError("EUSAGE", "histogram needs min < max and at most 2^24 bins");
    }

    struct Out { std::vector<double> changed; double bytes_changed = 0; patch::Realized r; std::vector<double> bins; };
    auto out = std::make_shared<Out>();
    uint8_t * bytes = data.Data(); const uint8_t * sel = mask.Data();
    auto * w = new TaskWorker(env,
        [=]() {
            const int64_t nblocks = numel / bs;
            const int64_t nchunks = (nblocks + patch::kBlocksPerChunk - 1) / patch::kBlocksPerChunk;
            std::vector<patch::Realized> partial((size_t) nchunks);
            std::vector<std::vector<int64_t>> changed_blocks((size_t) nchunks);
            const int nt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, nchunks));
            std::vector<std::unique_ptr<patch::SparseBins>> bins;
            for (int x = 0; x < nt; x++) bins.emplace_back(new patch::SparseBins(hist.bins));
            const bool quantized = ggml_is_quantized(t);
            parallel_ranges(nt, 0, nchunks, 1, 1, [&](int th, int64_t c0, int64_t c1) {
                BlockScratch sc; sc.init(bs, ts);
                std::vector<float> before((size_t) bs), target((size_t) bs), after((size_t) bs);
                std::vector<uint8_t> next(ts);
                for (int64_t c = c0; c < c1; c++) {
                    patch::Realized r;   // local (kept in registers), stored once per chunk
                    const int64_t b_end = std::min(nblocks, (c + 1) * patch::kBlocksPerChunk);
                    if (!quantized) {
                        // F32/F16/BF16: each selected element converted alone; the chunk starts on a mask byte
                        for (int64_t i8 = c * patch::kBlocksPerChunk; i8 < b_end; i8 += 8) {
                            uint8_t bits = sel[i8 >> 3];
                            while (bits) {
                                const int64_t i = i8 + __builtin_ctz(bits);
                                bits &= (uint8_t) (bits - 1);
                                if (i >= b_end) break;
                                uint8_t * p = bytes + (size_t) i * ts;
                                const float before = patch::load_float(t, p);
                                const float target = scale == 0.0 ? 0.0f : (float) ((double) before * scale);
                                uint8_t nb[4];
                                patch::store_float(t, target, nb);
                                r.blocks_touched++; r.selected_weights++; r.candidates[kCandExact]++;
                                if (ts == 2 ? (nb[0] != p[0] || nb[1] != p[1]) : memcmp(nb, p, ts) != 0) { memcpy(p, nb, ts); changed_blocks[(size_t) c].push_back(i); }
                                patch::account(r, *bins[(size_t) th], hist, true, before, patch::load_float(t, p), scale);
                            }
                        }
                        partial[(size_t) c] = r;
                        continue;
                    }
                    for (int64_t b = c * patch::kBlocksPerChunk; b < b_end; b++) {
                        const int64_t i0 = b * bs;
                        // any selected weight in this block?
                        int64_t nsel = 0;
                        if (bs % 8 == 0) { for (int64_t x = i0 >> 3; x < (i0 + bs) >> 3; x++) nsel += __builtin_popcount(sel[x]); }
                        else for (int64_t j = 0; j < bs; j++) nsel += (sel[(i0 + j) >> 3] >> ((i0 + j) & 7)) & 1;
                        if (nsel == 0) continue;
                        r.blocks_touched++; r.selected_weights += (double) nsel;
                        uint8_t * blk = bytes + (size_t) b * ts;
                        dequantize_into(t, blk, before.data(), bs);
                        for (int64_t j = 0; j < bs; j++) {
                            const bool s = (sel[(i0 + j) >> 3] >> ((i0 + j) & 7)) & 1;
                            target[j] = !s ? before[j] : scale == 0.0 ? 0.0f : (float) ((double) before[j] * scale);
                        }
                        const int64_t m = i0 / per_matrix;
                        const float * im = importance ? importance + m * n_in + (i0 % n_in) : nullptr;
                        const int kind = requant_block(t, bs, ts, blk, target.data(), im, sel, i0, strategy, sc, next.data());
                        r.candidates[kind]++;
                        if (memcmp(next.data(), blk, ts) != 0) { memcpy(blk, next.data(), ts); changed_blocks[(size_t) c].push_back(b); }
                        dequantize_into(t, blk, after.data(), bs);
                        for (int64_t j = 0; j < bs; j++) {
                            const bool s = (sel[(i0 + j) >> 3] >> ((i0 + j) & 7)) & 1;
                            patch::account(r, *bins[(size_t) th], hist, s, before[j], after[j], scale);
                        }
                    }
                    partial[(size_t) c] = r;
                }
            });
            for (const auto & p : partial) out->r.add(p);
            // the bins hit, as (index, count) pairs in increasing index
            std::vector<uint32_t> hit;
            for (const auto & bv : bins) hit.insert(hit.end(), bv->hit.begin(), bv->hit.end());
            std::sort(hit.begin(), hit.end());
            hit.erase(std::unique(hit.begin(), hit.end()), hit.end());
            for (uint32_t i : hit) {
                uint64_t n = 0;
                for (const auto & bv : bins) n += bv->counts[i];
                out->bins.push_back((double) i); out->bins.push_back((double) n);
            }
            for (auto & cb : changed_blocks) {
                out->bytes_changed += (double) cb.size() * (double) ts;
                if (want_ranges) {
                    for (int64_t b : cb) {
                        const double off = (double) b * (double) ts;
                        if (!out->changed.empty() && off - (out->changed[out->changed.size() - 2] + out->changed.back()) <= (double) merge_gap) out->changed.back() = off + (double) ts - out->changed[out->changed.size() - 2];
                        else { out->changed.push_back(off); out->changed.push_back((double) ts); }
                    }
                }
                std::vector<int64_t>().swap(cb);
            }
        },
        [out](Napi::Env e) -> Napi::Value {
            Napi::Object r = Napi::Object::New(e);
            r.Set("changed", ToJsArray<Napi::Float64Array>(e, out->changed));
            r.Set("bytesChanged", out->bytes_changed);
            r.Set("blocksTouched", out->r.blocks_touched);
            r.Set("selectedWeights", out->r.selected_weights);
            Napi::Float64Array cand = Napi::Float64Array::New(e, 4);
            for (int k = 0; k < 4; k++) cand[k] = out->r.candidates[k];
            r.Set("candidates", cand);
            Napi::Object z = Napi::Object::New(e);
            const patch::Realized & x = out->r;
            z.Set("selected", x.selected); z.Set("unchanged", x.unchanged); z.Set("onTarget", x.on_target);
            z.Set("ratioCount", x.ratio_count); z.Set("ratioSum", x.ratio_sum); z.Set("below", x.below); z.Set("above", x.above);
            z.Set("others", x.others); z.Set("othersChanged", x.others_changed); z.Set("otherChangeSq", x.other_change_sq); z.Set("otherValueSq", x.other_value_sq);
            z.Set("bins", ToJsArray<Napi::Float64Array>(e, out->bins));
            r.Set("realized", z);
            return r;
        });
    w->Keep(data); w->Keep(mask);
    if (importance) w->Keep(iv);
    return w->Start();
}

}  // namespace

void RegisterCodec(Napi::Env env, Napi::Object exports) {
    exports.Set("codecTypeInfo", Napi::Function::New(env, Export<TypeInfo>));
    exports.Set("dequantize", Napi::Function::New(env, Export<Dequantize>));
    exports.Set("quantize", Napi::Function::New(env, Export<Quantize>));
    exports.Set("selectTopK", Napi::Function::New(env, Export<SelectTopK>));
    exports.Set("requantizeBlocks", Napi::Function::New(env, Export<RequantizeBlocks>));
    exports.Set("patchTensor", Napi::Function::New(env, Export<PatchTensor>));
}
