// The exact top-K selector: for one tensor, the K largest scores |w| * colWeight of each group (a
// matrix or a row), as bit masks, found on all cores: per matrix, in one pass for every column set
// and K around thresholds estimated from a sample (select_matrix_fused), else (rows, small
// matrices, a missed estimate) by a radix select on the scores' bits or nth_element.
#include "codec.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace {

using namespace codec;

// Exact top-K of one group of scores. Scores are non-negative doubles, so their IEEE bits order
// like the values: a radix select on the bits finds the k-th largest exactly without sorting
// and without storing the scores. Only positive scores are eligible (a zero score contributes
// nothing). Ties at the threshold go to the lower flat index.
//
// A score is |w| * colWeight[column]. Groups are one matrix (or one row) of a tensor, scanned
// row by row so the column index needs no division. Large groups are split over threads at
// multiples of 64 weights (so no two threads write the same mask byte); the result does not
// depend on the number of threads.

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

// One mask per K (of one column set): bit i of byte i >> 3 is flat index i.
using Masks = std::vector<uint8_t *>;

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
void mark_range(const ScoreGroup & g, int64_t a, int64_t b, const std::vector<Threshold> & th, const Masks & masks, Tie && tie) {
    g.chunks(a, b, [&](int64_t first, const uint64_t * keys, int64_t count) {
        for (size_t q = 0; q < th.size(); q++) {
            const Threshold t = th[q];
            if (t.mode == -2) continue;
            uint8_t * m = masks[q];
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
void mark_with_thresholds(const ScoreGroup & g, const std::vector<Threshold> & th, const Masks & masks, int nt) {
    const int64_t begin = g.base, end = g.base + g.len;
    const size_t nk = th.size();
    std::vector<std::vector<int64_t>> ties((size_t) nt * nk);
    parallel_ranges(nt, begin, end, 64, kMinPerThread, [&](int t, int64_t a, int64_t b) {
        mark_range(g, a, b, th, masks, [&](size_t q, int64_t i) { ties[(size_t) t * nk + q].push_back(i); });
    });
    for (size_t q = 0; q < nk; q++) {
        int64_t left = th[q].take;
        for (int t = 0; t < nt && left > 0; t++)
            for (int64_t i : ties[(size_t) t * nk + q]) { if (left-- <= 0) break; set_mask_bit(masks[q], i); }
    }
}

// Small groups: the eligible keys are copied and nth_element finds each threshold.
void mark_top_small(const ScoreGroup & g, const std::vector<int64_t> & ks, const Masks & masks, std::vector<uint64_t> & scratch) {
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

void mark_top_radix(const ScoreGroup & g, const std::vector<int64_t> & ks, const Masks & masks, int n_threads, int64_t collect_limit, int sampling) {
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

// One matrix, every column set and every K in one pass over its weights (groups of radixMinGroup
// weights and more, by default). A sample of the scores gives each (set, K) a window [lo, hi]
// around its threshold (as in sample_thresholds); then a single pass, split over threads, computes
// |w| once and the scores of every set, marks the scores above hi straight into the mask, counts
// them, and collects the scores inside the window with their flat indices. The exact threshold is
// then the (k - above)-th largest of the window, and the window's scores above it, plus the first
// `take` equal to it (each thread's list is in index order and the threads follow each other), are
// marked. The second pass over the weights (mark_with_thresholds) is gone. When the window misses
// (the threshold is not inside it, or it holds too many scores), that K's bits of the group are
// cleared and it goes the histogram way (rare; sampling == 2 makes it common, for the tests).
// Scores are compared as doubles: they are non-negative, so the order is the order of their bits
// (the keys above), and a double compare vectorizes where a 64-bit unsigned one does not. NaN,
// zero and negative scores fall outside every window and below every hi, as key 0 does.
constexpr int64_t kFusedMinPerThread = 1 << 15;

struct WindowHits {
    std::vector<uint64_t> keys;
    std::vector<int64_t> index;
    int64_t above = 0;
    bool overflow = false;
    void reset() { keys.clear(); index.clear(); above = 0; overflow = false; }
};

// Reused across the matrices of one call (capacity kept: growing them anew per matrix was memmove).
struct FusedWorkspace {
    std::vector<WindowHits> hits;        // [thread][set][K]
    std::vector<int64_t> zeros;          // [thread][set]
    std::vector<uint64_t> sample;
    // the sample's places and their columns, for groups of len weights in rows of n_in: one entry per
    // shape, the last kShapes shapes kept (a model's layers repeat a handful of shapes, so keeping
    // one recomputed them at nearly every tensor: four divisions a place, 7% of a select)
    struct Places { int64_t len, n_in; std::vector<int64_t> place, column; };
    static constexpr size_t kShapes = 8;
    std::vector<Places> places;
    const Places & places_for(int64_t len, int64_t n_in, int64_t s) {
        for (const Places & p : places) if (p.len == len && p.n_in == n_in) return p;
        if (places.size() >= kShapes) places.erase(places.begin());
        Places p{len, n_in, std::vector<int64_t>((size_t) s), std::vector<int64_t>((size_t) s)};
        for (int64_t x = 0; x < s; x++) {
            // one place in each of s equal strata, at a pseudo-random place inside it (a fixed stride
            // would see only some columns when it divides the row width)
            const int64_t lo = (x * len) / s, hi = ((x + 1) * len) / s;
            const int64_t i = lo + (int64_t) (((uint64_t) (x + 1) * 0x9E3779B97F4A7C15ull) >> 33) % std::max<int64_t>(1, hi - lo);
            p.place[(size_t) x] = i;
            p.column[(size_t) x] = i % n_in;
        }
        places.push_back(std::move(p));
        return places.back();
    }
    size_t bytes() const {
        size_t b = (sample.capacity() + zeros.capacity()) * 8;
        for (const Places & p : places) b += (p.place.capacity() + p.column.capacity()) * 8;
        for (const WindowHits & h : hits) b += (h.keys.capacity() + h.index.capacity()) * 8;
        return b;
    }
};

inline void clear_bits(uint8_t * m, int64_t a, int64_t b) {
    for (; a < b && (a & 7); a++) m[a >> 3] &= (uint8_t) ~(1u << (a & 7));
    const int64_t whole = b & ~(int64_t) 7;
    if (a < whole) { memset(m + (a >> 3), 0, (size_t) ((whole - a) >> 3)); a = whole; }
    for (; a < b; a++) m[a >> 3] &= (uint8_t) ~(1u << (a & 7));
}

// set bits of a byte (no popcount instruction in a baseline x86-64 build)
constexpr struct BitsSet {
    uint8_t n[256];
    constexpr BitsSet() : n() { for (int i = 1; i < 256; i++) n[i] = (uint8_t) ((i & 1) + n[i >> 1]); }
    constexpr uint8_t operator[](unsigned i) const { return n[i]; }
} kBitsSet;

inline double key_value(uint64_t k) { double d; memcpy(&d, &k, 8); return d; }

// IEEE half to float, exactly (subnormals, infinities, NaN), without a call into ggml per value.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (frac << 13);
    else if (exp != 0) u = sign | ((exp + 112) << 23) | (frac << 13);
    else if (frac == 0) u = sign;
    else { float f = (float) frac * 5.9604644775390625e-8f; memcpy(&u, &f, 4); u |= sign; }   // frac * 2^-24
    float f; memcpy(&f, &u, 4);
    return f;
}

#if defined(__x86_64__) && defined(__GNUC__)
// |half| to double 8 at a time with the F16C conversion (checked at run time: the baseline build
// cannot assume it); the tail by half_to_float.
__attribute__((target("avx,f16c"))) void half_abs_to_double_f16c(const uint8_t * src, int64_t n, double * out) {
    const __m256d sign = _mm256_set1_pd(-0.0);
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (src + 2 * x)));
        _mm256_storeu_pd(out + x, _mm256_andnot_pd(sign, _mm256_cvtps_pd(_mm256_castps256_ps128(f))));
        _mm256_storeu_pd(out + x + 4, _mm256_andnot_pd(sign, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1))));
    }
    for (; x < n; x++) { uint16_t h; memcpy(&h, src + 2 * x, 2); out[x] = std::fabs((double) half_to_float(h)); }
}
// (__builtin_cpu_init first: this may run before libgcc's own initializer has)
bool has_f16c() {
    static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx"));
    return yes;
}
#endif

// The weights of one matrix as the fused pass reads them. F32, F16 and BF16 are converted chunk by
// chunk from the stored bytes (no full float copy of the matrix is written and read back); other
// types are dequantized whole by ggml first (their blocks do not start at every chunk). The
// histogram fallback needs the whole float matrix: dequantized() gives it, made on first use.
struct MatrixSource {
    ggml_type type;
    const uint8_t * raw;     // the matrix's stored bytes (F32, F16, BF16), else null
    const float * f32;       // the dequantized matrix (other types), else null until dequantized() runs
    std::function<const float *()> dequantize;
    void (*half_abs)(const uint8_t *, int64_t, double *) = nullptr;   // F16's load_abs at the pass's SIMD level (PassKernels), if it has one
    const float * dequantized() { if (!f32) f32 = dequantize(); return f32; }
    float at(int64_t i) const {
        if (f32) return f32[i];
        if (type == GGML_TYPE_F16) { uint16_t h; memcpy(&h, raw + 2 * i, 2); return half_to_float(h); }
        if (type == GGML_TYPE_BF16) { uint16_t h; memcpy(&h, raw + 2 * i, 2); const uint32_t u = (uint32_t) h << 16; float f; memcpy(&f, &u, 4); return f; }
        float f; memcpy(&f, raw + 4 * i, 4); return f;
    }
    void prefetch(int64_t i) const {
        if (f32) __builtin_prefetch(f32 + i);
        else __builtin_prefetch(raw + (type == GGML_TYPE_F32 ? 4 : 2) * i);
    }
    // out[x] = |w[off + x]| for x < n (n <= kChunk)
    void load_abs(int64_t off, int64_t n, double * out) const {
        if (!f32 && type == GGML_TYPE_F16 && half_abs) { half_abs(raw + 2 * off, n, out); return; }
#if defined(__x86_64__) && defined(__GNUC__)
        if (!f32 && type == GGML_TYPE_F16 && has_f16c()) { half_abs_to_double_f16c(raw + 2 * off, n, out); return; }
#endif
        alignas(64) float tmp[kChunk];
        const float * f;
        if (f32) f = f32 + off;
        else if (type == GGML_TYPE_F16) { ggml_fp16_to_fp32_row((const ggml_fp16_t *) (raw + 2 * off), tmp, n); f = tmp; }
        else if (type == GGML_TYPE_BF16) { ggml_bf16_to_fp32_row((const ggml_bf16_t *) (raw + 2 * off), tmp, n); f = tmp; }
        else { memcpy(tmp, raw + 4 * off, (size_t) n * 4); f = tmp; }
        for (int64_t x = 0; x < n; x++) out[x] = std::fabs((double) f[x]);
    }
};

#if defined(__SSE2__)
// The sign bits of 8 double lanes (2 in each of a..d, in order) as one byte: lane y is bit y.
inline unsigned mask8(__m128d a, __m128d b, __m128d c, __m128d d) {
    return (unsigned) _mm_movemask_pd(a) | (unsigned) _mm_movemask_pd(b) << 2 | (unsigned) _mm_movemask_pd(c) << 4 | (unsigned) _mm_movemask_pd(d) << 6;
}
#endif

// gmax[g] = the largest of v[8g .. 8g + 8) for g < ng. Scores are >= 0 and never NaN here.
inline void group_maxima(const double * v, int64_t ng, double * gmax) {
    for (int64_t g = 0; g < ng; g++, v += 8) {
#if defined(__SSE2__)
        const __m128d mm = _mm_max_pd(_mm_max_pd(_mm_loadu_pd(v), _mm_loadu_pd(v + 2)), _mm_max_pd(_mm_loadu_pd(v + 4), _mm_loadu_pd(v + 6)));
        gmax[g] = _mm_cvtsd_f64(_mm_max_pd(mm, _mm_unpackhi_pd(mm, mm)));
#else
        double mx = v[0];
        for (int y = 1; y < 8; y++) mx = v[y] > mx ? v[y] : mx;
        gmax[g] = mx;
#endif
    }
}

// Keeps the groups of list[0, n) whose largest score reaches lo, in order; returns how many. No
// branch on the data: a group is written, then counted only when it stays.
// identity: the list is 0 .. n-1 (not read; the first K's). (the baseline build's kernel; those for
// AVX2 and AVX-512 below keep the same groups in the same order)
int64_t keep_reaching(int32_t * list, int64_t n, const double * gmax, double lo, bool identity) {
    int64_t kept = 0;
    if (identity) for (int64_t i = 0; i < n; i++) { list[kept] = (int32_t) i; kept += gmax[i] >= lo; }
    else for (int64_t i = 0; i < n; i++) { const int32_t g = list[i]; list[kept] = g; kept += gmax[g] >= lo; }
    return kept;
}

// The hits of listed groups noted by a mark_listed kernel (nh groups: hit_group, hit_bits), their
// scores and flat indices appended to h in index order.
inline void note_hits(const double * v, int64_t nh, int64_t index0, WindowHits & h, const int32_t * hit_group, const uint8_t * hit_bits) {
    if (nh == 0) return;
    size_t total = 0;
    for (int64_t j = 0; j < nh; j++) total += kBitsSet[hit_bits[j]];
    const size_t at = h.keys.size();
    h.keys.resize(at + total); h.index.resize(at + total);
    uint64_t * kp = h.keys.data() + at;
    int64_t * ip = h.index.data() + at;
    for (int64_t j = 0; j < nh; j++) {
        const int64_t g = hit_group[j];
        const double * x = v + 8 * g;
        unsigned in = hit_bits[j];
        do {
            const int y = __builtin_ctz(in);
            memcpy(kp++, x + y, 8);
            *ip++ = index0 + 8 * g + y;
            in &= in - 1;
        } while (in);
    }
}

// One listed group's compare masks (bit y: score y of group g is above hi; is at least lo): its
// mask byte marked, and the group noted when a score lies inside the window (without a branch;
// note_hits takes their scores).
inline void mark_group(unsigned above, unsigned atleast, int32_t g, uint8_t * mb, int64_t & nh, int32_t * hit_group, uint8_t * hit_bits) {
    mb[g] |= (uint8_t) above;   // a listed group reaches lo: its byte is usually written anyway
    const unsigned in = atleast & ~above;
    hit_group[nh] = g; hit_bits[nh] = (uint8_t) in;
    nh += in != 0;
}

// One K's window [lo, hi] over the listed groups of 8 scores (group g: scores v[8g ..], flat
// indices index0 + 8g .., index0 a multiple of 8; mb[g] its mask byte): scores above hi are marked,
// those inside the window noted in h in index order. Returns how many were marked. hit_group and
// hit_bits: room for n entries. Out of line: the pass's hottest loop keeps its own line in a profile.
// (the baseline build's kernel; those for AVX2 and AVX-512 below compute the same bits)
__attribute__((noinline)) int64_t mark_listed(const double * v, const int32_t * list, int64_t n, int64_t index0, double lo, double hi, uint8_t * mb, WindowHits & h,
                    int32_t * hit_group, uint8_t * hit_bits) {
    int64_t up = 0, nh = 0;
#if defined(__SSE2__)
    const __m128d vhi = _mm_set1_pd(hi), vlo = _mm_set1_pd(lo);
#endif
    for (int64_t i = 0; i < n; i++) {
        const int32_t g = list[i];
        const double * x = v + 8 * (int64_t) g;
#if defined(__SSE2__)
        const __m128d v0 = _mm_loadu_pd(x), v1 = _mm_loadu_pd(x + 2), v2 = _mm_loadu_pd(x + 4), v3 = _mm_loadu_pd(x + 6);
        const unsigned above = mask8(_mm_cmpgt_pd(v0, vhi), _mm_cmpgt_pd(v1, vhi), _mm_cmpgt_pd(v2, vhi), _mm_cmpgt_pd(v3, vhi));
        const unsigned atleast = mask8(_mm_cmpge_pd(v0, vlo), _mm_cmpge_pd(v1, vlo), _mm_cmpge_pd(v2, vlo), _mm_cmpge_pd(v3, vlo));
#else
        unsigned above = 0, atleast = 0;
        for (int y = 0; y < 8; y++) { above |= (unsigned) (x[y] > hi) << y; atleast |= (unsigned) (x[y] >= lo) << y; }
#endif
        up += kBitsSet[above];
        mark_group(above, atleast, g, mb, nh, hit_group, hit_bits);
    }
    note_hits(v, nh, index0, h, hit_group, hit_bits);
    return up;
}

// The scores of one set over ng whole groups of 8 weights, for rows whose width n_in is a multiple
// of 8 (a group then lies in one row: its column weights are col[j .. j + 8), j a multiple of 8):
// sc[x] = |w| aw[x] * col[column], or 0 where that is not positive (zero, NaN); gmax[g] = the
// largest score of group g. Returns how many scores are 0. max(v, 0) is MAXPD's "v > 0 ? v : 0"
// (the second operand when v is NaN or a zero): the bits of the generic path exactly.
// (the baseline build's kernel; those for AVX2 and AVX-512 below compute the same bits)
int64_t score_groups(const double * aw, const double * col, int64_t n_in, int64_t j, int64_t ng, double * sc, double * gmax) {
    int64_t z = 0;
    for (int64_t g = 0; g < ng; g++, aw += 8, sc += 8) {
        const double * c = col + j;
#if defined(__SSE2__)
        const __m128d zero = _mm_setzero_pd();
        const __m128d v0 = _mm_max_pd(_mm_mul_pd(_mm_loadu_pd(aw), _mm_loadu_pd(c)), zero);
        const __m128d v1 = _mm_max_pd(_mm_mul_pd(_mm_loadu_pd(aw + 2), _mm_loadu_pd(c + 2)), zero);
        const __m128d v2 = _mm_max_pd(_mm_mul_pd(_mm_loadu_pd(aw + 4), _mm_loadu_pd(c + 4)), zero);
        const __m128d v3 = _mm_max_pd(_mm_mul_pd(_mm_loadu_pd(aw + 6), _mm_loadu_pd(c + 6)), zero);
        _mm_storeu_pd(sc, v0); _mm_storeu_pd(sc + 2, v1); _mm_storeu_pd(sc + 4, v2); _mm_storeu_pd(sc + 6, v3);
        const __m128d mm = _mm_max_pd(_mm_max_pd(v0, v1), _mm_max_pd(v2, v3));
        gmax[g] = _mm_cvtsd_f64(_mm_max_pd(mm, _mm_unpackhi_pd(mm, mm)));
        z += kBitsSet[mask8(_mm_cmpeq_pd(v0, zero), _mm_cmpeq_pd(v1, zero), _mm_cmpeq_pd(v2, zero), _mm_cmpeq_pd(v3, zero))];
#else
        double mx = 0;
        for (int y = 0; y < 8; y++) { const double v = aw[y] * c[y]; sc[y] = v > 0 ? v : 0.0; mx = sc[y] > mx ? sc[y] : mx; z += sc[y] == 0; }
        gmax[g] = mx;
#endif
        j += 8;
        if (j == n_in) j = 0;
    }
    return z;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MATHNEURO_TOPK_SIMD 1
// (GCC 12's AVX2 gathers and AVX-512 intrinsics leave an undefined pass-through operand on purpose, and its
// -Wmaybe-uninitialized then warns in every caller: a known false positive, silenced here only)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// The same two kernels for AVX2 (two 4-double vectors a group) and AVX-512 (one 8-double vector a
// group, the compare masks are the mask bytes). Picked at run time (pass_kernels, below).
__attribute__((target("avx2,popcnt"), noinline)) int64_t mark_listed_avx2(const double * v, const int32_t * list, int64_t n, int64_t index0, double lo, double hi, uint8_t * mb, WindowHits & h,
                    int32_t * hit_group, uint8_t * hit_bits) {
    int64_t up = 0, nh = 0;
    const __m256d vhi = _mm256_set1_pd(hi), vlo = _mm256_set1_pd(lo);
    for (int64_t i = 0; i < n; i++) {
        const int32_t g = list[i];
        const double * x = v + 8 * (int64_t) g;
        const __m256d v0 = _mm256_loadu_pd(x), v1 = _mm256_loadu_pd(x + 4);
        const unsigned above = (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(v0, vhi, _CMP_GT_OQ)) | (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(v1, vhi, _CMP_GT_OQ)) << 4;
        const unsigned atleast = (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(v0, vlo, _CMP_GE_OQ)) | (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(v1, vlo, _CMP_GE_OQ)) << 4;
        up += __builtin_popcount(above);
        mark_group(above, atleast, g, mb, nh, hit_group, hit_bits);
    }
    note_hits(v, nh, index0, h, hit_group, hit_bits);
    return up;
}

// keep_reaching 8 groups at a time: their maxima compared with lo (loaded, or gathered through the
// list), the kept entries packed to the front by a permutation from a table of the 256 masks.
// Each step stores 8 entries at `kept` <= i, over entries already read.
constexpr struct PackTable {
    int32_t p[256][8];
    constexpr PackTable() : p() {
        for (int m = 0; m < 256; m++) { int k = 0; for (int y = 0; y < 8; y++) if (m >> y & 1) p[m][k++] = y; for (; k < 8; k++) p[m][k] = 0; }
    }
} kPack;

__attribute__((target("avx2,popcnt"))) int64_t keep_reaching_avx2(int32_t * list, int64_t n, const double * gmax, double lo, bool identity) {
    const __m256d vlo = _mm256_set1_pd(lo);
    const __m256i step = _mm256_set1_epi32(8);
    __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t kept = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i idx; __m256d g0, g1;
        if (identity) { idx = iota; iota = _mm256_add_epi32(iota, step); g0 = _mm256_loadu_pd(gmax + i); g1 = _mm256_loadu_pd(gmax + i + 4); }
        else {
            idx = _mm256_loadu_si256((const __m256i *) (list + i));
            g0 = _mm256_i32gather_pd(gmax, _mm256_castsi256_si128(idx), 8);
            g1 = _mm256_i32gather_pd(gmax, _mm256_extracti128_si256(idx, 1), 8);
        }
        const unsigned m = (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(g0, vlo, _CMP_GE_OQ)) | (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(g1, vlo, _CMP_GE_OQ)) << 4;
        _mm256_storeu_si256((__m256i *) (list + kept), _mm256_permutevar8x32_epi32(idx, _mm256_loadu_si256((const __m256i *) kPack.p[m])));
        kept += __builtin_popcount(m);
    }
    for (; i < n; i++) { const int32_t g = identity ? (int32_t) i : list[i]; list[kept] = g; kept += gmax[g] >= lo; }
    return kept;
}

__attribute__((target("avx512f,popcnt"), noinline)) int64_t mark_listed_avx512(const double * v, const int32_t * list, int64_t n, int64_t index0, double lo, double hi, uint8_t * mb, WindowHits & h,
                    int32_t * hit_group, uint8_t * hit_bits) {
    int64_t up = 0, nh = 0;
    const __m512d vhi = _mm512_set1_pd(hi), vlo = _mm512_set1_pd(lo);
    for (int64_t i = 0; i < n; i++) {
        const int32_t g = list[i];
        const __m512d x = _mm512_loadu_pd(v + 8 * (int64_t) g);
        const unsigned above = (unsigned) _mm512_cmp_pd_mask(x, vhi, _CMP_GT_OQ);
        const unsigned atleast = (unsigned) _mm512_cmp_pd_mask(x, vlo, _CMP_GE_OQ);
        up += __builtin_popcount(above);
        mark_group(above, atleast, g, mb, nh, hit_group, hit_bits);
    }
    note_hits(v, nh, index0, h, hit_group, hit_bits);
    return up;
}

__attribute__((target("avx2,popcnt"))) int64_t score_groups_avx2(const double * aw, const double * col, int64_t n_in, int64_t j, int64_t ng, double * sc, double * gmax) {
    int64_t z = 0;
    const __m256d zero = _mm256_setzero_pd();
    for (int64_t g = 0; g < ng; g++, aw += 8, sc += 8) {
        const double * c = col + j;
        const __m256d v0 = _mm256_max_pd(_mm256_mul_pd(_mm256_loadu_pd(aw), _mm256_loadu_pd(c)), zero);
        const __m256d v1 = _mm256_max_pd(_mm256_mul_pd(_mm256_loadu_pd(aw + 4), _mm256_loadu_pd(c + 4)), zero);
        _mm256_storeu_pd(sc, v0); _mm256_storeu_pd(sc + 4, v1);
        const __m256d m4 = _mm256_max_pd(v0, v1);
        const __m128d m2 = _mm_max_pd(_mm256_castpd256_pd128(m4), _mm256_extractf128_pd(m4, 1));
        gmax[g] = _mm_cvtsd_f64(_mm_max_pd(m2, _mm_unpackhi_pd(m2, m2)));
        z += __builtin_popcount((unsigned) _mm256_movemask_pd(_mm256_cmp_pd(v0, zero, _CMP_EQ_OQ)) | (unsigned) _mm256_movemask_pd(_mm256_cmp_pd(v1, zero, _CMP_EQ_OQ)) << 4);
        j += 8;
        if (j == n_in) j = 0;
    }
    return z;
}

__attribute__((target("avx512f,popcnt"))) int64_t score_groups_avx512(const double * aw, const double * col, int64_t n_in, int64_t j, int64_t ng, double * sc, double * gmax) {
    int64_t z = 0;
    const __m512d zero = _mm512_setzero_pd();
    for (int64_t g = 0; g < ng; g++, aw += 8, sc += 8) {
        const __m512d v = _mm512_max_pd(_mm512_mul_pd(_mm512_loadu_pd(aw), _mm512_loadu_pd(col + j)), zero);
        _mm512_storeu_pd(sc, v);
        const __m256d m4 = _mm256_max_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
        const __m128d m2 = _mm_max_pd(_mm256_castpd256_pd128(m4), _mm256_extractf128_pd(m4, 1));
        gmax[g] = _mm_cvtsd_f64(_mm_max_pd(m2, _mm_unpackhi_pd(m2, m2)));
        z += __builtin_popcount((unsigned) _mm512_cmp_pd_mask(v, zero, _CMP_EQ_OQ));
        j += 8;
        if (j == n_in) j = 0;
    }
    return z;
}

// keep_reaching as keep_reaching_avx2, the packing by VPCOMPRESSD into a register (its store form is
// slow on some CPUs)
__attribute__((target("avx512f,avx512vl,popcnt"))) int64_t keep_reaching_avx512(int32_t * list, int64_t n, const double * gmax, double lo, bool identity) {
    const __m512d vlo = _mm512_set1_pd(lo);
    const __m256i step = _mm256_set1_epi32(8);
    __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t kept = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i idx; __m512d g;
        if (identity) { idx = iota; iota = _mm256_add_epi32(iota, step); g = _mm512_loadu_pd(gmax + i); }
        else { idx = _mm256_loadu_si256((const __m256i *) (list + i)); g = _mm512_i32gather_pd(idx, gmax, 8); }
        const __mmask8 m = _mm512_cmp_pd_mask(g, vlo, _CMP_GE_OQ);
        _mm256_storeu_si256((__m256i *) (list + kept), _mm256_maskz_compress_epi32(m, idx));
        kept += __builtin_popcount((unsigned) m);
    }
    for (; i < n; i++) { const int32_t g = identity ? (int32_t) i : list[i]; list[kept] = g; kept += gmax[g] >= lo; }
    return kept;
}

// |half| to double, 16 at a time (F16 matrices' load_abs at this level); the tail by half_to_float
__attribute__((target("avx512f"))) void half_abs_to_double_avx512(const uint8_t * src, int64_t n, double * out) {
    const __m256i magnitude = _mm256_set1_epi16(0x7fff);
    int64_t x = 0;
    for (; x + 16 <= n; x += 16) {
        const __m512 f = _mm512_cvtph_ps(_mm256_and_si256(_mm256_loadu_si256((const __m256i *) (src + 2 * x)), magnitude));
        _mm512_storeu_pd(out + x, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
        _mm512_storeu_pd(out + x + 8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
    }
    for (; x < n; x++) { uint16_t h; memcpy(&h, src + 2 * x, 2); out[x] = std::fabs((double) half_to_float(h)); }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// The fused pass's two kernels at a SIMD level: 0 the baseline build's (SSE2 on x86-64), 1 AVX2,
// 2 AVX-512; the widest this CPU runs, at most `cap` (the `simdLevel` option: tests compare the
// levels' masks). Every level computes the same bits.
struct PassKernels {
    int64_t (*score)(const double *, const double *, int64_t, int64_t, int64_t, double *, double *);
    int64_t (*mark)(const double *, const int32_t *, int64_t, int64_t, double, double, uint8_t *, WindowHits &, int32_t *, uint8_t *);
    int64_t (*keep)(int32_t *, int64_t, const double *, double, bool);
    void (*half_abs)(const uint8_t *, int64_t, double *);   // F16's load_abs, or null: MatrixSource's own
    int level;
};

int cpu_simd_level() {
#if defined(MATHNEURO_TOPK_SIMD)
    // (__builtin_cpu_init first: this may run before libgcc's own initializer has; libgcc checks
    // that the OS saves the AVX and AVX-512 registers, XGETBV, before it reports them. Level 2
    // needs AVX-512VL too: keep_reaching_avx512 packs 8 lanes, which AVX-512F alone (Xeon Phi) lacks)
    static const int level = (__builtin_cpu_init(),
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt") ? 2
        : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") ? 1 : 0);
    return level;
#else
    return 0;
#endif
}

PassKernels pass_kernels(int cap) {
    const int level = std::min(cap, cpu_simd_level());
#if defined(MATHNEURO_TOPK_SIMD)
    if (level >= 2) return {score_groups_avx512, mark_listed_avx512, keep_reaching_avx512, half_abs_to_double_avx512, 2};
    if (level == 1) return {score_groups_avx2, mark_listed_avx2, keep_reaching_avx2, nullptr, 1};
#endif
    return {score_groups, mark_listed, keep_reaching, nullptr, 0};
}

// How many of v[0, n) are 0.
inline int64_t count_zeros(const double * v, int64_t n) {
    int64_t z = 0, x = 0;
#if defined(__SSE2__)
    const __m128d zero = _mm_setzero_pd();
    for (; x + 8 <= n; x += 8)
        z += kBitsSet[mask8(_mm_cmpeq_pd(_mm_loadu_pd(v + x), zero), _mm_cmpeq_pd(_mm_loadu_pd(v + x + 2), zero),
                            _mm_cmpeq_pd(_mm_loadu_pd(v + x + 4), zero), _mm_cmpeq_pd(_mm_loadu_pd(v + x + 6), zero))];
#endif
    for (; x < n; x++) z += v[x] == 0;
    return z;
}

void select_matrix_fused(MatrixSource & w, const std::vector<const double *> & cols, int64_t n_in, int64_t base, int64_t len,
                         const std::vector<int64_t> & ks, const std::vector<Masks> & masks,
                         int n_threads, int64_t collect_limit, bool tight, FusedWorkspace & ws, const PassKernels & kern) {
    const int64_t ns = (int64_t) cols.size(), nk = (int64_t) ks.size();
    const int64_t s = std::min<int64_t>(65536, len / 16);
    // The sample: the same places for every set (one score from each of s equal strata, at a
    // pseudo-random place inside it: a fixed stride would see only some columns when it divides
    // the row width). Each window's bounds are the sample's scores at two ranks, found by
    // nth_element rank after rank (descending ranks, each search left of the previous one).
    struct Window { double lo = 0, hi = 0; bool active = false; };
    std::vector<Window> win((size_t) (ns * nk));
    // |w| and the column of every sampled place first (one read of the matrix for every set)
    ws.sample.resize((size_t) (s * ns));
    {
        // the places depend on the shape only: computed once per shape (four divisions a place
        // cost more than the reads)
        const FusedWorkspace::Places & at = ws.places_for(len, n_in, s);
        const int64_t * place = at.place.data();
        const int64_t * column = at.column.data();
        uint64_t * keys = ws.sample.data();
        // split over threads: the places are far apart (a cache line each), the reads wait on memory
        parallel_blocks(n_threads, 0, s, 8192, [&](int, int64_t x0, int64_t x1) {
            for (int64_t x = x0; x < x1; x++) {
                if (x + 32 < x1) w.prefetch(place[x + 32]);
                const double aw = std::fabs((double) w.at(place[x]));
                for (int64_t si = 0; si < ns; si++) {
                    const double sc = aw * cols[(size_t) si][column[x]];
                    uint64_t k = 0; if (sc > 0) memcpy(&k, &sc, 8);
                    keys[si * s + x] = k;
                }
            }
        });
    }
    // the sets' windows side by side
    parallel_blocks(n_threads, 0, ns, 1, [&](int, int64_t s0, int64_t s1) {
        for (int64_t si = s0; si < s1; si++) {
            const auto sample = ws.sample.begin() + si * s;
            struct Need { int64_t rank; int64_t q; bool upper; };
            std::vector<Need> need;
            for (int64_t q = 0; q < nk; q++) {
                const int64_t k = ks[(size_t) q];
                if (k <= 0) continue;
                const double p = std::min(1.0, (double) k / (double) len), r = p * (double) s;
                const double m = tight ? 0.0 : 4.0 * std::sqrt((double) s * p * (1 - p)) + 4.0;
                const int64_t a = std::min<int64_t>(s - 1, (int64_t) std::floor(r - m)), b = (int64_t) std::ceil(r + m);
                Window & wq = win[(size_t) (si * nk + q)];
                wq.active = true;
                // hi: +inf when the window reaches the top; lo: the smallest positive double when it reaches the bottom
                wq.hi = HUGE_VAL; wq.lo = std::numeric_limits<double>::denorm_min();
                if (a >= 0) need.push_back({a, q, true});
                if (b < s) need.push_back({b, q, false});
            }
            // highest rank first, each next one inside the part left of the previous (a window's two
            // ranks are close: searching right of the lower one scanned nearly the whole sample twice)
            std::sort(need.begin(), need.end(), [](const Need & x, const Need & y) { return x.rank > y.rank; });
            int64_t end = s;
            for (const Need & n : need) {
                if (n.rank < end) {
                    std::nth_element(sample, sample + n.rank, sample + end, std::greater<uint64_t>());
                    end = n.rank;
                }
                const uint64_t v = sample[n.rank];
                Window & wq = win[(size_t) (si * nk + n.q)];
                if (n.upper) wq.hi = key_value(v);
                else wq.lo = v ? key_value(v) : std::numeric_limits<double>::denorm_min();
            }
            for (int64_t q = 0; q < nk; q++) { Window & wq = win[(size_t) (si * nk + q)]; wq.active = wq.active && wq.lo <= wq.hi; }
        }     });

    // the pass
    const int nt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, len / kFusedMinPerThread));
    const int64_t cap = std::max<int64_t>(collect_limit, len / 16) / nt + 1;
    ws.hits.resize((size_t) (nt * ns * nk));
    for (auto & h : ws.hits) h.reset();
    ws.zeros.assign((size_t) (nt * ns), 0);
    // per set, its active K by lo ascending: a group of 8 scores whose largest is below lo needs
    // nothing from that K nor from any later one (most scores are below every window)
    std::vector<std::vector<int64_t>> order((size_t) ns);
    for (int64_t si = 0; si < ns; si++) {
        for (int64_t q = 0; q < nk; q++) if (win[(size_t) (si * nk + q)].active) order[(size_t) si].push_back(q);
        std::sort(order[(size_t) si].begin(), order[(size_t) si].end(), [&](int64_t x, int64_t y) { return win[(size_t) (si * nk + x)].lo < win[(size_t) (si * nk + y)].lo; });
    }
    // blocks to whichever thread is free (whole mask bytes: block boundaries are multiples of 64);
    // a thread's hits are in index order within each of its blocks, not across them (ties: below)
    parallel_blocks(nt, base, base + len, kFusedMinPerThread, [&](int t, int64_t a, int64_t b) {
        alignas(64) double aw[kChunk];
        alignas(64) double sc[kChunk];
        alignas(64) double gmax[kChunk / 8];
        alignas(64) int32_t glist[kChunk / 8];
        alignas(64) int32_t hit_group[kChunk / 8];
        alignas(64) uint8_t hit_bits[kChunk / 8];
        std::vector<int64_t> live;
        std::vector<int64_t> up((size_t) nk);
        int64_t j_first = (a - base) % n_in;
        for (int64_t first = a; first < b; first += kChunk) {
            const int64_t count = std::min<int64_t>(kChunk, b - first);
            w.load_abs(first - base, count, aw);
            int64_t j_next = j_first;
            const bool whole = n_in % 8 == 0 && (j_first & 7) == 0 && (first & 7) == 0 && (count & 7) == 0;
            for (int64_t si = 0; si < ns; si++) {
                // scores of this set; not positive (zero, NaN) -> 0. Rows of a multiple of 8 weights (every
                // quantized type's, nearly every float model's): groups of 8 in one row, scored, counted
                // and their maxima taken in one SIMD kernel. Else rows in straight runs (no division).
                const double * col = cols[(size_t) si];
                if (whole) {
                    ws.zeros[(size_t) (t * ns + si)] += kern.score(aw, col, n_in, j_first, count / 8, sc, gmax);
                    j_next = (j_first + count) % n_in;
                } else {
                    int64_t j = j_first;
                    for (int64_t x = 0; x < count;) {
                        const int64_t run = std::min<int64_t>(count - x, n_in - j);
                        const double * c = col + j;
                        for (int64_t y = 0; y < run; y++) { const double v = aw[x + y] * c[y]; sc[x + y] = v > 0 ? v : 0.0; }
                        x += run; j += run;
                        if (j == n_in) j = 0;
                    }
                    j_next = j;
                    ws.zeros[(size_t) (t * ns + si)] += count_zeros(sc, count);
                }
                WindowHits * hits = &ws.hits[(size_t) (t * ns + si) * (size_t) nk];
                uint8_t * const * m = masks[(size_t) si].data();
                const Window * wn = &win[(size_t) (si * nk)];
                live.clear();
                for (int64_t q : order[(size_t) si]) if (!hits[q].overflow) live.push_back(q);
                if (live.empty()) continue;
                std::fill(up.begin(), up.end(), 0);
                // one score, every K (the unaligned ends)
                auto one = [&](int64_t x) {
                    const double v = sc[x];
                    for (int64_t q : live) {
                        if (wn[q].lo > v) break;
                        if (v > wn[q].hi) { set_mask_bit(m[q], first + x); up[(size_t) q]++; }
                        else { uint64_t k; memcpy(&k, &v, 8); hits[q].keys.push_back(k); hits[q].index.push_back(first + x); }
                    }
                };
                int64_t x = 0;
                for (; x < count && ((first + x) & 7); x++) one(x);
                // whole mask bytes: groups of 8 scores, one byte of each K. Each group's largest score
                // first; then K by K (lo ascending) over the groups that reach its window, listed without
                // branching on the data (each K's list is the previous one's less the groups below its
                // lo). Testing group by group and K by K mispredicted about once per group and K.
                const int64_t x0 = x, ng = (count - x0) / 8;
                if (!whole) group_maxima(sc + x0, ng, gmax);   // (else the score kernel's)
                int64_t nl = ng;
                bool identity = true;   // the first K's list is every group
                for (int64_t q : live) {
                    const Window wq = wn[q];
                    nl = kern.keep(glist, nl, gmax, wq.lo, identity);
                    identity = false;
                    if (nl == 0) break;   // and every later K: their lo is higher still
                    up[(size_t) q] += kern.mark(sc + x0, glist, nl, first + x0, wq.lo, wq.hi, m[q] + ((first + x0) >> 3), hits[q], hit_group, hit_bits);
                }
                x = x0 + 8 * ng;
                for (; x < count; x++) one(x);
                for (int64_t q : live) {
                    hits[q].above += up[(size_t) q];
                    if ((int64_t) hits[q].keys.size() > cap) hits[q].overflow = true;
                }
            }
            j_first = j_next;
        }
    });

    // each (set, K): the threshold inside its window, or the fallback
    std::vector<std::vector<int64_t>> missed((size_t) ns);
    std::vector<int64_t> items;
    for (int64_t si = 0; si < ns; si++) {
        int64_t eligible = len;
        for (int t = 0; t < nt; t++) eligible -= ws.zeros[(size_t) (t * ns + si)];
        for (int64_t q = 0; q < nk; q++) {
            const int64_t k = ks[(size_t) q];
            if (k <= 0) continue;
            if (!win[(size_t) (si * nk + q)].active) { missed[(size_t) si].push_back(q); continue; }
            int64_t up = 0, n = 0; bool over = false;
            for (int t = 0; t < nt; t++) {
                const WindowHits & h = ws.hits[(size_t) ((t * ns + si) * nk + q)];
                up += h.above; n += (int64_t) h.keys.size(); over |= h.overflow;
            }
            if (over || !(up < k && k <= up + n)) { missed[(size_t) si].push_back(q); continue; }
            items.push_back(si * nk + q);
        }
    }
    // items write to distinct masks: split over threads
    parallel_blocks(n_threads, 0, (int64_t) items.size(), 1, [&](int, int64_t i0, int64_t i1) {
        std::vector<uint64_t> keys;
        std::vector<int64_t> ties;
        for (int64_t i = i0; i < i1; i++) {
            const int64_t si = items[(size_t) i] / nk, q = items[(size_t) i] % nk;
            int64_t up = 0;
            keys.clear(); ties.clear();
            for (int t = 0; t < nt; t++) {
                const WindowHits & h = ws.hits[(size_t) ((t * ns + si) * nk + q)];
                up += h.above; keys.insert(keys.end(), h.keys.begin(), h.keys.end());
            }
            const Threshold th = rth_largest(keys, ks[(size_t) q] - up);
            uint8_t * m = masks[(size_t) si][(size_t) q];
            for (int t = 0; t < nt; t++) {
                const WindowHits & h = ws.hits[(size_t) ((t * ns + si) * nk + q)];
                for (size_t e = 0; e < h.keys.size(); e++) {
                    if (h.keys[e] > th.T) set_mask_bit(m, h.index[e]);
                    else if (h.keys[e] == th.T) ties.push_back(h.index[e]);
                }
            }
            // scores equal to the threshold: the lowest indices are taken (as every other path takes
            // them), whatever order the threads found them in
            if ((int64_t) ties.size() > th.take) std::nth_element(ties.begin(), ties.begin() + th.take, ties.end());
            for (int64_t e = 0; e < th.take; e++) set_mask_bit(m, ties[(size_t) e]);
        }
    });
    for (int64_t si = 0; si < ns; si++) {
        if (missed[(size_t) si].empty()) continue;
        std::vector<Threshold> th((size_t) nk);
        std::vector<char> resolved((size_t) nk, 1);
        for (int64_t q = 0; q < nk; q++) th[(size_t) q].mode = -2;   // marked above (or nothing to mark): left alone
        for (int64_t q : missed[(size_t) si]) {
            clear_bits(masks[(size_t) si][(size_t) q], base, base + len);
            th[(size_t) q].mode = 0; resolved[(size_t) q] = 0;
        }
        ScoreGroup g{w.dequantized(), cols[(size_t) si], n_in, base, len};
        const int hnt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, len / kMinPerThread));
        histogram_thresholds(g, ks, th, resolved, hnt, collect_limit);
        mark_with_thresholds(g, th, masks[(size_t) si], hnt);
    }
}

// selectTopK({ type, data, nIn, rows, matrices, colWeights: Float64Array[], groupBy: 'matrix'|'row',
//              counts: number[], radixMinGroup?, radixBucketLimit?, threads? }): Promise<Uint8Array[][]>
//              (masks[set][count])
// Each mask has one bit per weight (bit i of byte i>>3 is flat index i).
Napi::Value SelectTopK(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = RequireOptionsObject(info, "selectTopK(options)");
    const ggml_type t = checked_type(RequireInteger(o, "type"));
    if (!can_dequantize(t)) throw CodedError("EQUANT", "ggml cannot dequantize " + type_name(t));
    // the tensor's bytes: `data`, or `read` ({ fd, offset }: viewed from the file on the worker thread)
    const FileAt read_at = file_at(o, "read");
    if (read_at.fd >= 0 && IsSet(o, "data")) throw CodedError("EUSAGE", "give either data or read, not both");
    Napi::Uint8Array data;
    if (read_at.fd < 0) data = RequireTypedArray<uint8_t>(o.Get("data"), "data");
    const int64_t n_in = RequireInteger(o, "nIn", 1), rows = RequireInteger(o, "rows", 1), mats = RequireInteger(o, "matrices", 1);
    if (rows > INT64_MAX / n_in || mats > INT64_MAX / (n_in * rows)) throw CodedError("EUSAGE", "nIn * rows * matrices is too large");
    const int64_t numel = n_in * rows * mats;
    if (n_in % ggml_blck_size(t) != 0) throw CodedError("EUSAGE", "nIn is not a whole number of " + type_name(t) + " blocks");
    const size_t n_bytes = bytes_for(t, numel);
    if (read_at.fd < 0 && data.ByteLength() != n_bytes) throw CodedError("EUSAGE", "data holds " + std::to_string(data.ByteLength()) + " bytes, not the size of a " + type_name(t) + " tensor of " + std::to_string(numel) + " elements");
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
    const int64_t radix_min = OptionalInteger(o, "radixMinGroup", 1 << 16, 1);
    // the fused pass's SIMD kernels: the widest this CPU runs, at most simdLevel (tests: 0 baseline, 1 AVX2, 2 AVX-512)
    const PassKernels kernels = pass_kernels((int) std::min<int64_t>(OptionalInteger(o, "simdLevel", 2, 0), 2));

    const int n_threads = get_threads(o);
    const int64_t collect_limit = OptionalInteger(o, "radixBucketLimit", kCollectLimitDefault, 1);
    // 1: thresholds first estimated from a sample (default); 0: histogram only; 2: sample with no margin (tests the fallback)
    const int sampling = (int) std::min<int64_t>(OptionalInteger(o, "radixSampling", 1, 0), 2);
    // subtract: the first set's masks less the second's (bit by bit, on the worker), one set returned
    Napi::Value sv = o.Get("subtract");
    if (!sv.IsUndefined() && !sv.IsBoolean()) throw CodedError("EUSAGE", "subtract must be a boolean");
    const bool subtract = sv.IsBoolean() && sv.As<Napi::Boolean>().Value();
    if (subtract && cols.size() != 2) throw CodedError("EUSAGE", "subtract needs exactly two colWeights sets");

    // The masks: zeroed allocations handed to JS as they are (external ArrayBuffers, freed by their
    // finalizer): copying each into a fresh JS buffer was a memmove and a page fault per 4 KiB.
    struct Result {
        std::vector<Masks> masks;   // [set][K]
        bool second_borrowed = false;   // subtract: set 1 lives in the worker thread's scratch, not ours to free
        ~Result() { for (size_t s = 0; s < masks.size(); s++) if (!(s == 1 && second_borrowed)) for (uint8_t * p : masks[s]) free(p); }
    };
    auto result = std::make_shared<Result>();
    const size_t mask_bytes = (size_t) ((numel + 7) / 8);
    const uint8_t * given = read_at.fd < 0 ? data.Data() : nullptr;
    auto * w = new TaskWorker(env,
        [=]() {
            std::unique_ptr<FileView> view;
            if (read_at.fd >= 0) view.reset(new FileView(read_at, n_bytes));
            const uint8_t * const bytes = view ? view->data() : given;
            result->masks.assign(cols.size(), Masks(ks.size(), nullptr));
            // subtract: the second set's masks never reach JS; they are this thread's reused scratch,
            // cleared here (a fresh calloc per call and K cost a page fault and a kernel clear per 4 KiB:
            // ~20% of an 8-K sweep). Kept between calls up to 64 MiB.
            static thread_local std::vector<std::vector<uint8_t>> scratch_masks;
            struct ReleaseScratch { size_t bytes; ~ReleaseScratch() { if (bytes > ((size_t) 64 << 20)) std::vector<std::vector<uint8_t>>().swap(scratch_masks); } } release_scratch{subtract ? mask_bytes * ks.size() : 0};
            for (size_t s = 0; s < result->masks.size(); s++) {
                for (size_t q = 0; q < ks.size(); q++) {
                    uint8_t *& p = result->masks[s][q];
                    if (s == 1 && subtract) {
                        if (scratch_masks.size() < ks.size()) scratch_masks.resize(ks.size());
                        std::vector<uint8_t> & b = scratch_masks[q];
                        if (b.size() < mask_bytes) { b.clear(); b.resize(mask_bytes, 0); } else memset(b.data(), 0, mask_bytes);
                        p = b.data();
                        result->second_borrowed = true;
                    } else if (!(p = (uint8_t *) calloc(mask_bytes, 1))) throw std::bad_alloc();
                }
            }
            const int64_t per_matrix = n_in * rows;
            const size_t row_bytes = bytes_for(t, n_in);
            const bool direct = t == GGML_TYPE_F32 && ((uintptr_t) bytes % alignof(float)) == 0;
            // reused across calls on this worker thread: a fresh buffer per matrix costs page faults
            // (a thread_local named inside the lambdas below would be each thread's own: use the pointer)
            // (sized on first use: F32, F16 and BF16 matrices of the fused pass need it only for a fallback)
            static thread_local std::vector<float> dequant_buffer;
            std::vector<float> * const buffer = &dequant_buffer;
            struct Release { ~Release() { if (dequant_buffer.capacity() * sizeof(float) > ((size_t) 512 << 20)) std::vector<float>().swap(dequant_buffer); } } release;   // not held past the call when huge
            std::vector<std::vector<uint64_t>> scratch((size_t) n_threads);
            // the fused pass's window hits and sample: kept on this worker thread between calls (one
            // call per tensor; growing them anew per tensor was memmove and page faults), unless large
            static thread_local FusedWorkspace fused_workspace;
            FusedWorkspace & workspace = fused_workspace;
            struct ReleaseWorkspace { ~ReleaseWorkspace() { if (fused_workspace.bytes() > ((size_t) 64 << 20)) fused_workspace = FusedWorkspace(); } } release_workspace;
            // one matrix at a time: dequantized on all threads (whole rows), then scored per column set
            const bool fused = group >= per_matrix && per_matrix >= radix_min && sampling != 0 && per_matrix / 16 >= 1024;
            const bool chunked = t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16;   // converted chunk by chunk
            for (int64_t m = 0; m < mats; m++) {
                const int64_t mbase = m * per_matrix;
                auto dequantize = [&]() -> const float * {
                    if (direct) return (const float *) bytes + mbase;
                    if (buffer->size() < (size_t) per_matrix) buffer->resize((size_t) per_matrix);
                    float * const dequant = buffer->data();
                    parallel_blocks(n_threads, 0, rows, std::max<int64_t>(1, kMinPerThread / n_in), [&](int, int64_t r0, int64_t r1) {
                        dequantize_into(t, bytes + (size_t) (m * rows + r0) * row_bytes, dequant + r0 * n_in, (r1 - r0) * n_in);
                    });
                    return dequant;
                };
                if (fused) {
                    std::vector<const double *> mcols;
                    for (const double * c : cols) mcols.push_back(c + m * n_in);
                    MatrixSource src{t, chunked ? bytes + (size_t) (m * rows) * row_bytes : nullptr, chunked ? nullptr : dequantize(), dequantize, kernels.half_abs};
                    select_matrix_fused(src, mcols, n_in, mbase, per_matrix, ks, result->masks, n_threads, collect_limit, sampling == 2, workspace, kernels);
                    continue;
                }
                const float * wf = dequantize();
                for (size_t s = 0; s < cols.size(); s++) {
                    const Masks & masks = result->masks[s];
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
            if (subtract) {
                // masks[0][q] &= ~masks[1][q], 8 bytes at a time (calloc'd and vector storage: 16-byte
                // aligned), then the second set (the scratch above) is dropped from the result: done here,
                // the JS thread neither allocates nor loops per byte
                Masks & a = result->masks[0];
                Masks & b = result->masks[1];
                const int64_t words = (int64_t) (mask_bytes / 8);
                for (size_t q = 0; q < a.size(); q++) {
                    uint64_t * aw = (uint64_t *) a[q];
                    const uint64_t * bw = (const uint64_t *) b[q];
                    parallel_ranges(n_threads, 0, words, 8, 1 << 16, [&](int, int64_t i0, int64_t i1) {
                        for (int64_t i = i0; i < i1; i++) aw[i] &= ~bw[i];
                    });
                    for (size_t i = (size_t) words * 8; i < mask_bytes; i++) a[q][i] &= (uint8_t) ~b[q][i];
                    b[q] = nullptr;   // the thread's scratch (above)
                }
                result->masks.pop_back();
            }
        },
        [result, mask_bytes](Napi::Env e) -> Napi::Value {
            Napi::Array out = Napi::Array::New(e, result->masks.size());
            for (size_t s = 0; s < result->masks.size(); s++) {
                Napi::Array per = Napi::Array::New(e, result->masks[s].size());
                for (size_t q = 0; q < result->masks[s].size(); q++) {
                    uint8_t *& p = result->masks[s][q];
                    Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(e, p, mask_bytes, [](Napi::Env, void * d) { free(d); });
                    p = nullptr;   // the ArrayBuffer owns it now
                    per.Set((uint32_t) q, Napi::Uint8Array::New(e, mask_bytes, buffer, 0));
                }
                out.Set((uint32_t) s, per);
            }
            return out;
        });
    if (read_at.fd < 0) w->Keep(data);
    w->Keep(cwa);
    for (uint32_t i = 0; i < cwa.Length(); i++) w->Keep(cwa.Get(i));
    return w->Start();
}

}  // namespace

void RegisterTopK(Napi::Env env, Napi::Object exports) {
    exports.Set("selectTopK", Napi::Function::New(env, Export<SelectTopK>));
}
