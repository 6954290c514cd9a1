// The exact top-K selector: for one tensor, the K largest scores |w| * colWeight of each group (a
// matrix or a row), as bit masks, found by a radix select on the scores' bits on all cores.
#include "codec.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>

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

// selectTopK({ type, data, nIn, rows, matrices, colWeights: Float64Array[], groupBy: 'matrix'|'row',
//              counts: number[], radixMinGroup?, radixBucketLimit?, threads? }): Promise<Uint8Array[][]>
//              (masks[set][count])
// Each mask has one bit per weight (bit i of byte i>>3 is flat index i).
Napi::Value SelectTopK(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = RequireOptionsObject(info, "selectTopK(options)");
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

}  // namespace

void RegisterTopK(Napi::Env env, Napi::Object exports) {
    exports.Set("selectTopK", Napi::Function::New(env, Export<SelectTopK>));
}
