// Requantization of the blocks that hold selected weights: each block toward its target (selected
// weights times the scale, the others as they were) through ggml's quantizers and the keep-scale
// codes; requantizeBlocks for a list of blocks, patchTensor for a whole tensor in place.
#include "codec.h"

#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#ifndef _WIN32
#include <unistd.h>
#endif

namespace {

using namespace codec;

// Requantizing one block toward its target: selected weights times the scale, the others as they
// were. 'best' keeps the candidate closest to the target (least squared error; ties: fewer changed
// bytes) among ggml's plain requantization, keep-scale re-rounding and an importance-weighted
// requantization (selected weights x16); 'plain' and 'keep-scale' build only that candidate.
// 'auto' builds the keep-scale candidate; where it cannot reach the target (a selected weight's
// target lies more than half a code step beyond its code range: the weight sits at the largest
// code) it also builds a rescaled candidate (Q6_K, Q4_K, Q5_K: the scale, and the min, of only the
// sub-blocks that need it raised by the fewest steps and their 16 or 32 weights re-rounded; where a
// sub-block scale is already at its largest, the super-block scales raised just enough and every
// weight re-rounded), and only where that is impossible (or the type has no sub-block scales:
// Q8_0, Q4_0, ...) ggml's two candidates; it keeps the closest as 'best' does. Types without
// keep-scale codes get 'best'.

enum Strategy { kBest = 0, kPlain = 1, kKeepScale = 2, kAuto = 3 };
enum Candidate { kCandPlain = 0, kCandKeepScale = 1, kCandWeighted = 2, kCandExact = 3, kCandRescaled = 4 };
constexpr int kCandidates = 5;

Strategy parse_strategy(const std::string & s, ggml_type t) {
    if (s != "best" && s != "plain" && s != "keep-scale" && s != "auto") throw CodedError("EUSAGE", "strategy must be 'auto', 'best', 'plain' or 'keep-scale'");
    if (s == "keep-scale" && !keep_scale_supported(t)) throw CodedError("EQUANT", "keep-scale re-rounding does not support " + type_name(t));
    if (s == "auto") return keep_scale_supported(t) ? kAuto : kBest;
    return s == "best" ? kBest : s == "plain" ? kPlain : kKeepScale;
}

struct BlockScratch {
    std::vector<uint8_t> cand, best;
    std::vector<float> deq, best_deq, weights;
    std::vector<uint8_t> sat;   // per weight: selected and out of the keep-scale code range
    bool bound = true;   // auto: a rescaled candidate that provably loses is not built (same bytes; tests turn it off)
    void init(int64_t bs, size_t ts) {
        cand.resize(ts); best.resize(ts); deq.resize((size_t) bs); best_deq.resize((size_t) bs); weights.resize((size_t) bs); sat.resize((size_t) bs);
    }
};

// Every value finite: no exponent of all ones (what std::isfinite tests), without a branch per value.
bool all_finite(const float * x, int64_t n) {
    uint32_t bad = 0;
    for (int64_t j = 0; j < n; j++) { uint32_t w; memcpy(&w, x + j, 4); bad |= (w & 0x7f800000u) == 0x7f800000u; }
    return bad == 0;
}

// The sum over j < n of (v[j] - tg[j])^2 in double, in index order (the order every candidate's error
// is summed in, so that a tie between candidates is the same tie on every machine).
double squared_error(const float * v, const float * tg, int64_t n) {
    double err = 0;
    for (int64_t j = 0; j < n; j++) { const double d = (double) v[j] - (double) tg[j]; err += d * d; }
    return err;
}

// f(j) for each weight j of the block whose bit (sel_base + j) is set, in increasing j: the mask read a
// word at a time where the block starts on a mask byte, so a block's unselected weights cost nothing.
template <typename F>
void for_each_selected(const uint8_t * sel, int64_t sel_base, int64_t bs, F && f) {
    if ((sel_base & 7) == 0 && (bs & 7) == 0) {
        const uint8_t * p = sel + (sel_base >> 3);
        int64_t k = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        for (; k + 8 <= bs / 8; k += 8) {   // bit i of byte k + m is bit 8 m + i of the little-endian word
            uint64_t w; memcpy(&w, p + k, 8);
            while (w) { f((int) (k * 8 + __builtin_ctzll(w))); w &= w - 1; }
        }
#endif
        for (; k < bs / 8; k++) {
            unsigned m = p[k];
            while (m) { f((int) (k * 8 + __builtin_ctz(m))); m &= m - 1; }
        }
        return;
    }
    for (int64_t j = 0; j < bs; j++) { const int64_t i = sel_base + j; if ((sel[i >> 3] >> (i & 7)) & 1) f((int) j); }
}

// sel: mask bits, bit sel_base + j is weight j of the block. im: the block's importance (or null).
// Writes the kept candidate to `out` (ts bytes) and returns its kind; with `after`, its values too
// (as dequantize_into gives them).
int requant_block(ggml_type t, int64_t bs, size_t ts, const uint8_t * orig, const float * tg, const float * im,
                  const uint8_t * sel, int64_t sel_base, Strategy strategy, BlockScratch & sc, uint8_t * out, float * after = nullptr) {
    auto is_sel = [&](int64_t j) { const int64_t i = sel_base + j; return (sel[i >> 3] >> (i & 7)) & 1; };
    double best_err = INFINITY; int best_diff = 1 << 30; int best_kind = -1;
    // The only candidate (keep-scale, or auto's keep-scale where no weight saturates): kept when its
    // error is finite, that is when every value and target is (a sum of at most 256 squares of
    // float differences cannot overflow a double); its error and changed bytes decide nothing.
    bool after_done = false;   // `after` already holds the kept candidate's values
    auto consider_only = [&](int kind) {
        float * deq = after ? after : sc.deq.data();
        dequantize_into(t, sc.cand.data(), deq, bs);
        if (!all_finite(deq, bs) || !all_finite(tg, bs)) return;
        best_kind = kind; memcpy(sc.best.data(), sc.cand.data(), ts);
        after_done = after != nullptr;
    };
    auto consider = [&](int kind) {
        dequantize_into(t, sc.cand.data(), sc.deq.data(), bs);
        const double err = squared_error(sc.deq.data(), tg, bs);
        if (!std::isfinite(err)) return;
        int diff = 0; for (size_t k = 0; k < ts; k++) diff += sc.cand[k] != orig[k];
        if (err < best_err || (err == best_err && diff < best_diff)) {
            best_err = err; best_diff = diff; best_kind = kind; sc.best = sc.cand;
            if (after) memcpy(sc.best_deq.data(), sc.deq.data(), (size_t) bs * sizeof(float));
        }
    };
    if (strategy != kKeepScale && strategy != kAuto) {
        ggml_quantize_chunk(t, tg, sc.cand.data(), 0, 1, bs, im);
        consider(kCandPlain);
    }
    bool saturated = false;   // a selected weight's target beyond the code range by more than half a step
    if (strategy != kPlain && keep_scale_supported(t)) {
        memcpy(sc.cand.data(), orig, ts);
        std::fill(sc.sat.begin(), sc.sat.end(), 0);
        for_each_selected(sel, sel_base, bs, [&](int j) {
            CodeSlot s = read_slot(t, sc.cand.data(), j);
            if (!(s.a != 0) || !std::isfinite(s.a) || !std::isfinite(s.b)) return;
            const double qf = ((double) tg[j] - s.b) / s.a;
            if (qf > s.qmax + 0.5 || qf < s.qmin - 0.5) { saturated = true; sc.sat[j] = 1; }
            int q0 = (int) round_half_away(std::max((double) s.qmin, std::min((double) s.qmax, qf)));
            int bestq = s.q; double beste = std::fabs((double) (s.a * s.q + s.b) - tg[j]);
            for (int q = q0 - 1; q <= q0 + 1; q++) {
                if (q < s.qmin || q > s.qmax) continue;
                double e = std::fabs((double) (s.a * q + s.b) - tg[j]);
                if (e < beste) { beste = e; bestq = q; }
            }
            if (bestq != s.q) write_code(t, sc.cand.data(), j, bestq);
        });
        // no other candidate follows (best_kind < 0: none came before)
        if (best_kind < 0 && (strategy == kKeepScale || (strategy == kAuto && !saturated))) consider_only(kCandKeepScale);
        else consider(kCandKeepScale);
    }
    if (strategy == kAuto && saturated && rescale_sub_block_size(t) > 0) {
        // sc.cand still holds the keep-scale candidate
        const int n = rescale_sub_block_size(t), nsub = (int) (bs / n);
        // the sub-blocks that need it: every scale fitted first, then their codes re-rounded (a fit
        // writes only its own sub-block's scale bits, a re-rounding only its codes: the same bytes as
        // fitting and re-rounding one sub-block after the other, and nothing re-rounded when one
        // cannot be fitted and the whole block is rescaled instead)
        bool need[16] = {};
        bool ok = nsub <= 16;
        for (int sub = 0; ok && sub < nsub; sub++) {
            for (int i = 0; i < n; i++) need[sub] = need[sub] || sc.sat[(size_t) (sub * n + i)];
            if (need[sub] && !fit_sub_block_scale(t, sc.cand.data(), sub, tg + sub * n)) ok = false;
        }
        // A rescaled candidate that cannot be closer than keep-scale is dropped before its codes are
        // re-rounded (on Q4_K nearly all are: the other weights of a re-rounded sub-block move by up to
        // half a step): a lower bound of its error on the sub-blocks it re-rounds, from the new scales
        // alone, against keep-scale's error there (sc.deq holds keep-scale's values), with a margin far
        // above what the float sums' order can change (~256 x 2^-53 of the total). Only a candidate
        // that consider would drop is dropped: the bytes kept are those of building every candidate.
        // (Q4_K, Q5_K: 32-weight sub-blocks, where it nearly always loses; on Q6_K it nearly always
        // wins, and the bound would cost without saving)
        const bool keep_known = sc.bound && n == 32 && best_kind == kCandKeepScale;   // its error is best_err, finite
        auto cannot_win = [&](double lower, double keep) { return keep_known && lower > keep + 1e-9 * (best_err + lower + keep); };
        if (ok) {
            double lower = 0, keep = 0;
            if (keep_known) {
                for (int sub = 0; sub < nsub; sub++) {
                    if (!need[sub]) continue;
                    lower += rerounded_error_bound(t, sc.cand.data(), sub, tg + sub * n);
                    keep += squared_error(sc.deq.data() + sub * n, tg + sub * n, n);
                }
            }
            if (!cannot_win(lower, keep)) {
                for (int sub = 0; sub < nsub; sub++) if (need[sub]) reround_sub_block_codes(t, sc.cand.data(), sub, tg + sub * n);
                consider(kCandRescaled);
            }
            saturated = false;
        }
        else {
            memcpy(sc.cand.data(), orig, ts);
            if (rescale_block_scales(t, sc.cand.data(), tg)) {
                double lower = 0;
                bool lost = false;
                for (int sub = 0; keep_known && sub < nsub && !lost; sub++) {
                    lower += rerounded_error_bound(t, sc.cand.data(), sub, tg + sub * n);
                    lost = cannot_win(lower, best_err);
                }
                if (!lost) {
                    for (int sub = 0; sub < nsub; sub++) reround_sub_block_codes(t, sc.cand.data(), sub, tg + sub * n);
                    consider(kCandRescaled);
                }
                saturated = false;
            }
        }
    }
    if (strategy == kAuto && saturated) {
        ggml_quantize_chunk(t, tg, sc.cand.data(), 0, 1, bs, im);
        consider(kCandPlain);
    }
    if ((strategy == kBest || (strategy == kAuto && saturated)) && uses_imatrix(t)) {
        for (int j = 0; j < bs; j++) sc.weights[j] = (im ? std::max(im[j], 1e-8f) : 1.0f) * (is_sel(j) ? 16.0f : 1.0f);
        ggml_quantize_chunk(t, tg, sc.cand.data(), 0, 1, bs, sc.weights.data());
        consider(kCandWeighted);
    }
    if (best_kind < 0) {
        memcpy(out, orig, ts);
        if (after) dequantize_into(t, orig, after, bs);
        return kCandPlain;
    }
    memcpy(out, sc.best.data(), ts);
    if (after && !after_done) memcpy(after, sc.best_deq.data(), (size_t) bs * sizeof(float));
    return best_kind;
}

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

// requantizeBlocks({ type, blocks: Uint8Array, selected: Uint8Array (one bit per element),
//   scale: number (0 prunes), imatrix?: Float32Array (one per element), strategy: 'plain'|'best' }):
//   Promise<{ bytes, before: Float32Array, after: Float32Array, chosen: Uint8Array (per block:
//   0 plain, 1 keep-scale, 2 weighted, 3 exact, 4 rescaled) }>
// Target of every block: selected weights times scale, the others unchanged. 'best' keeps, per
// block, the candidate closest to the target (least squared error; ties: fewer changed bytes).
Napi::Value RequantizeBlocks(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = RequireOptionsObject(info, "requantizeBlocks(options)");
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
//   bins }, ranges?: false, mergeGap?: bytes, read?: { fd, offset }, write?: { fd, offset } }):
//   Promise<{ changed: Float64Array (merged byte
//   ranges: offset, length, ...; empty with ranges: false), bytesChanged,
//   blocksTouched, selectedWeights, candidates: Float64Array(5) (blocks kept per candidate kind:
//   plain, keep-scale, weighted, exact, rescaled), realized: { selected, unchanged, onTarget, ratioCount,
//   ratioSum, below, above, bins: Float64Array (the bins hit: index, count, index, count, ...),
//   others, othersChanged, otherChangeSq, otherValueSq } }>
// Every block holding a selected weight is requantized toward its target as requantizeBlocks does
// (float types: each selected element converted on its own), on all threads; the realized-scale
// figures are accumulated per chunk of blocks and summed in block order, so the result does not
// depend on the number of threads. With `read`, data is first filled from that file at that offset,
// with `write`, the patched tensor is then written there, both on the worker thread (POSIX only).
namespace patch {

constexpr int64_t kBlocksPerChunk = 1024;

struct Realized {
    double selected = 0, unchanged = 0, on_target = 0, ratio_count = 0, ratio_sum = 0, below = 0, above = 0;
    double others = 0, others_changed = 0, other_change_sq = 0, other_value_sq = 0;
    double blocks_touched = 0, selected_weights = 0;
    double candidates[kCandidates] = {0, 0, 0, 0, 0};
    void add(const Realized & o) {
        selected += o.selected; unchanged += o.unchanged; on_target += o.on_target; ratio_count += o.ratio_count; ratio_sum += o.ratio_sum;
        below += o.below; above += o.above; others += o.others; others_changed += o.others_changed;
        other_change_sq += o.other_change_sq; other_value_sq += o.other_value_sq;
        blocks_touched += o.blocks_touched; selected_weights += o.selected_weights;
        for (int k = 0; k < kCandidates; k++) candidates[k] += o.candidates[k];
    }
};

struct Histogram { double min = -1, max = 3; int64_t bins = 0; };

// One weight's before/after into the figures (the same arithmetic as src/patch/realized.ts).
// A histogram of many bins of which few are hit, the bins hit listed.
struct SparseBins {
    const int64_t n;
    uint32_t * counts = nullptr;
    std::vector<uint32_t> hit;
    explicit SparseBins(int64_t n_) : n(n_) { if (n > 0 && !(counts = (uint32_t *) calloc((size_t) n, sizeof(uint32_t)))) throw std::bad_alloc(); }
    ~SparseBins() { free(counts); }
    SparseBins(const SparseBins &) = delete;
    SparseBins & operator=(const SparseBins &) = delete;
    inline void add(size_t i) { if (counts[i]++ == 0) hit.push_back((uint32_t) i); }
    void clear() { for (uint32_t i : hit) counts[i] = 0; hit.clear(); }
};

// Histograms are taken from a pool and given back cleared (only the bins hit are reset): a calloc
// of the 400k bins (1.6 MB) per thread and call was a memset of all of it once glibc's mmap
// threshold had risen past that size (4.4% of the CPU of a qwen-0.5b F16 select + patch). At most
// 8 are kept.
std::mutex bins_mu;
std::vector<std::unique_ptr<SparseBins>> & bins_pool() { static std::vector<std::unique_ptr<SparseBins>> pool; return pool; }

std::unique_ptr<SparseBins> take_bins(int64_t n) {
    {
        std::lock_guard<std::mutex> lock(bins_mu);
        auto & pool = bins_pool();
        for (size_t i = 0; i < pool.size(); i++) {
            if (pool[i]->n != n) continue;
            std::unique_ptr<SparseBins> b = std::move(pool[i]);
            pool.erase(pool.begin() + (std::ptrdiff_t) i);
            return b;
        }
    }
    return std::unique_ptr<SparseBins>(new SparseBins(n));
}

void give_bins(std::unique_ptr<SparseBins> b) {
    b->clear();
    std::lock_guard<std::mutex> lock(bins_mu);
    if (bins_pool().size() < 8) bins_pool().push_back(std::move(b));
}

// A selected weight's share of the figures: flags, and the ratio after / before and its bin where
// kRatio / kBinned are set (the same arithmetic as src/patch/realized.ts).
enum : uint8_t { kUnchanged = 1, kOnTarget = 2, kRatio = 4, kBelow = 8, kAbove = 16, kBinned = 32 };
struct Share { double ratio = 0; uint32_t bin = 0; uint8_t flags = 0; };
inline Share share_of(float before, float after, double scale, const Histogram & h) {
    const double b = before, a = after;
    Share x;
    if (a == b || (std::isnan(a) && std::isnan(b))) x.flags |= kUnchanged;
    const float target = scale == 0.0 ? 0.0f : (float) (b * scale);
    if (a == (double) target) x.flags |= kOnTarget;
    if (b != 0 && std::isfinite(b) && std::isfinite(a)) {
        x.flags |= kRatio;
        x.ratio = a / b;
        if (h.bins > 0) {
            if (x.ratio < h.min) x.flags |= kBelow;
            else if (x.ratio >= h.max) x.flags |= kAbove;
            else { x.flags |= kBinned; x.bin = (uint32_t) ((x.ratio - h.min) / (h.max - h.min) * (double) h.bins); }   // >= 0: truncation is floor
        }
    }
    return x;
}

inline void account(Realized & r, SparseBins & bins, const Histogram & h, bool selected, float before, float after, double scale) {
    const double b = before, a = after;
    if (selected) {
        const Share x = share_of(before, after, scale, h);
        r.selected++;
        if (x.flags & kUnchanged) r.unchanged++;
        if (x.flags & kOnTarget) r.on_target++;
        if (x.flags & kRatio) {
            r.ratio_sum += x.ratio; r.ratio_count++;
            if (x.flags & kBelow) r.below++;
            if (x.flags & kAbove) r.above++;
            if (x.flags & kBinned) bins.add(x.bin);
        }
    } else {
        r.others++;
        if (a != b) { r.others_changed++; r.other_change_sq += (a - b) * (a - b); }
        r.other_value_sq += b * b;
    }
}

// The unselected weights of one block (sel: mask bits, bit sel_base + j is weight j): how many
// changed, and the sums of their squared change and of their squared value before, as
// patch::account adds them but summed in 4 lanes (weight j into lane j mod 4, the lanes then added
// (0 + 1) + (2 + 3)): one chain of dependent adds per block cost a quarter of a Q4_K keep-scale
// patch. A NaN or an infinity counts and sums as in account: a changed NaN's square is NaN, an
// unchanged value adds nothing to the change (the terms of selected or unchanged weights are
// masked to +0, not multiplied by 0). The SSE2 loop (4 weights at a time, two lanes per register)
// gives the bits of the scalar one.
struct OtherSums { int64_t changed = 0; double change_sq = 0, value_sq = 0; };
inline OtherSums other_sums(const float * before, const float * after, const uint8_t * sel, int64_t sel_base, int64_t bs) {
    double c[4] = {0, 0, 0, 0}, v[4] = {0, 0, 0, 0};
    int64_t changed = 0, j = 0;
#if defined(__SSE2__)
    if ((sel_base & 7) == 0) {
        const __m128i weight_bit = _mm_setr_epi32(1, 2, 4, 8);
        __m128i moved_n = _mm_setzero_si128();   // per lane, how many moved (each moved lane is -1)
        __m128d c01 = _mm_setzero_pd(), c23 = _mm_setzero_pd(), v01 = _mm_setzero_pd(), v23 = _mm_setzero_pd();
        for (; j + 8 <= bs; j += 8) {
            const int bits = sel[(sel_base + j) >> 3];
            for (int half = 0; half < 8; half += 4) {
                // o: all ones in the lanes of the 4 weights whose mask bit is clear
                const __m128i o = _mm_cmpeq_epi32(_mm_and_si128(_mm_set1_epi32(bits >> half), weight_bit), _mm_setzero_si128());
                const __m128 bf = _mm_loadu_ps(before + j + half), af = _mm_loadu_ps(after + j + half);
                const __m128i mi = _mm_and_si128(_mm_castps_si128(_mm_cmpneq_ps(af, bf)), o);   // unordered (NaN) counts as changed, as != does
                moved_n = _mm_sub_epi32(moved_n, mi);
                const __m128d mlo = _mm_castsi128_pd(_mm_unpacklo_epi32(mi, mi)), mhi = _mm_castsi128_pd(_mm_unpackhi_epi32(mi, mi));
                const __m128d olo = _mm_castsi128_pd(_mm_unpacklo_epi32(o, o)), ohi = _mm_castsi128_pd(_mm_unpackhi_epi32(o, o));
                const __m128d blo = _mm_cvtps_pd(bf), bhi = _mm_cvtps_pd(_mm_movehl_ps(bf, bf));
                const __m128d dlo = _mm_sub_pd(_mm_cvtps_pd(af), blo), dhi = _mm_sub_pd(_mm_cvtps_pd(_mm_movehl_ps(af, af)), bhi);
                c01 = _mm_add_pd(c01, _mm_and_pd(mlo, _mm_mul_pd(dlo, dlo)));
                c23 = _mm_add_pd(c23, _mm_and_pd(mhi, _mm_mul_pd(dhi, dhi)));
                v01 = _mm_add_pd(v01, _mm_and_pd(olo, _mm_mul_pd(blo, blo)));
                v23 = _mm_add_pd(v23, _mm_and_pd(ohi, _mm_mul_pd(bhi, bhi)));
            }
        }
        int32_t n[4];
        _mm_storeu_si128((__m128i *) n, moved_n);
        changed = (int64_t) n[0] + n[1] + n[2] + n[3];
        _mm_storeu_pd(c, c01); _mm_storeu_pd(c + 2, c23); _mm_storeu_pd(v, v01); _mm_storeu_pd(v + 2, v23);
    }
#endif
    for (; j < bs; j++) {
        const int64_t i = sel_base + j;
        const bool other = !((sel[i >> 3] >> (i & 7)) & 1);
        const double b = before[j], a = after[j], d = a - b;
        const bool moved = other && a != b;
        changed += moved;
        c[j & 3] += moved ? d * d : 0.0;
        v[j & 3] += other ? b * b : 0.0;
    }
    return {changed, (c[0] + c[1]) + (c[2] + c[3]), (v[0] + v[1]) + (v[2] + v[3])};
}

// What patching one element of a float type does, with ggml's own conversions (codec.h's inline
// copies of those ggml_quantize_chunk uses): its new bits, and its share of the figures.
template <ggml_type T> using FloatBits = std::conditional_t<T == GGML_TYPE_F32, uint32_t, uint16_t>;
template <ggml_type T> struct Outcome { double ratio; uint32_t bin; FloatBits<T> after; uint8_t flags; };   // a Share and the new bits
static_assert(sizeof(Outcome<GGML_TYPE_F16>) == 16, "a 16-bit type's table is 1 MiB");

template <ggml_type T>
inline Outcome<T> outcome(FloatBits<T> old, double scale, const Histogram & h) {
    auto decode = [](FloatBits<T> x) -> float {
        if constexpr (T == GGML_TYPE_F32) return f32_bits(x);
        else if constexpr (T == GGML_TYPE_F16) return fp16_to_fp32(x);
        else return bf16_to_fp32(x);
    };
    const float before = decode(old);
    const float target = scale == 0.0 ? 0.0f : (float) ((double) before * scale);
    Outcome<T> o{};
    if constexpr (T == GGML_TYPE_F32) o.after = bits_f32(target);
    else if constexpr (T == GGML_TYPE_F16) o.after = fp32_to_fp16(target);
    else o.after = fp32_to_bf16(target);
    const Share x = share_of(before, decode(o.after), scale, h);
    o.ratio = x.ratio; o.bin = x.bin; o.flags = x.flags;
    return o;
}

// The outcome of each of the 65536 values of a 16-bit float type under one scale and histogram,
// computed once (1 MiB) and kept for the calls that follow with the same (the last 4 kept).
template <ggml_type T>
std::shared_ptr<const std::vector<Outcome<T>>> outcome_table(double scale, const Histogram & h) {
    struct Entry { double scale, min, max; int64_t bins; std::shared_ptr<const std::vector<Outcome<T>>> table; };
    static std::mutex mu;
    static std::vector<Entry> kept;
    std::lock_guard<std::mutex> lock(mu);
    for (const Entry & e : kept) {
        if (memcmp(&e.scale, &scale, sizeof scale) == 0 && e.min == h.min && e.max == h.max && e.bins == h.bins) return e.table;
    }
    auto table = std::make_shared<std::vector<Outcome<T>>>(65536);
    for (uint32_t x = 0; x < 65536; x++) (*table)[x] = outcome<T>((uint16_t) x, scale, h);
    if (kept.size() == 4) kept.erase(kept.begin());
    kept.push_back({scale, h.min, h.max, h.bins, table});
    return table;
}

// The selected elements of [i0, i_end) of a float tensor (i0 a multiple of 8), each multiplied by
// `scale` in double and stored rounded to T, into the chunk's figures `r` (which start at zero), with
// the outcome of each value from `table` (16-bit types) or computed. The figures are those of
// `account` for each weight in index order: every count is an integer (kept as one, then stored as
// the double that adding 1.0 each time gives) and the ratios are added one by one in index order.
template <ggml_type T>
void float_chunk(uint8_t * bytes, const uint8_t * sel, int64_t i0, int64_t i_end, double scale, const Histogram & h, const Outcome<T> * table,
                 SparseBins & bins, Realized & r, std::vector<int64_t> * listed, int64_t & n_changed) {
    using Bits = FloatBits<T>;
    int64_t selected = 0, unchanged = 0, on_target = 0, ratio_count = 0, below = 0, above = 0, changed = 0;
    double ratio_sum = r.ratio_sum;
    // the mask 64 bits at a time (one unpredictable loop exit per 64 weights, not per 8), then the
    // last bytes one at a time; set bits in increasing index either way
    for (int64_t i8 = i0; i8 < i_end; ) {
        uint64_t bits;
        const int64_t base = i8;
        if (i_end - i8 >= 64) { bits = load_le64(sel + (i8 >> 3)); i8 += 64; }
        else { bits = sel[i8 >> 3]; if (i_end - i8 < 8) bits &= (1u << (i_end - i8)) - 1; i8 += 8; }
        while (bits) {
            const int64_t i = base + __builtin_ctzll(bits);
            bits &= bits - 1;
            uint8_t * p = bytes + (size_t) i * sizeof(Bits);
            Bits old; memcpy(&old, p, sizeof(Bits));
            Outcome<T> o;
            if constexpr (T == GGML_TYPE_F32) o = outcome<T>(old, scale, h);
            else o = table[old];
            if (o.after != old) { memcpy(p, &o.after, sizeof(Bits)); changed++; if (listed) listed->push_back(i); }
            selected++;
            unchanged += o.flags & kUnchanged;
            on_target += (o.flags & kOnTarget) != 0;
            if (o.flags & kRatio) {
                ratio_sum += o.ratio; ratio_count++;
                below += (o.flags & kBelow) != 0;
                above += (o.flags & kAbove) != 0;
                if (o.flags & kBinned) bins.add(o.bin);
            }
        }
    }
    r.blocks_touched += (double) selected; r.selected_weights += (double) selected; r.candidates[kCandExact] += (double) selected;
    r.selected += (double) selected; r.unchanged += (double) unchanged; r.on_target += (double) on_target;
    r.ratio_sum = ratio_sum; r.ratio_count += (double) ratio_count; r.below += (double) below; r.above += (double) above;
    n_changed += changed;
}

}  // namespace patch

Napi::Value PatchTensor(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = RequireOptionsObject(info, "patchTensor(options)");
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
    // candidateBound: false builds every rescaled candidate in full (tests: the bound changes nothing)
    Napi::Value bv = o.Get("candidateBound");
    if (!bv.IsUndefined() && !bv.IsBoolean()) throw CodedError("EUSAGE", "candidateBound must be a boolean");
    const bool candidate_bound = !bv.IsBoolean() || bv.As<Napi::Boolean>().Value();
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

    const FileAt read_at = file_at(o, "read"), write_at = file_at(o, "write");

    struct Out { std::vector<double> changed; double bytes_changed = 0; patch::Realized r; std::vector<double> bins; };
    auto out = std::make_shared<Out>();
    uint8_t * bytes = data.Data(); const uint8_t * sel = mask.Data();
    auto * w = new TaskWorker(env,
        [=]() {
            const int64_t nblocks = numel / bs;
            const int64_t nchunks = (nblocks + patch::kBlocksPerChunk - 1) / patch::kBlocksPerChunk;
            std::vector<patch::Realized> partial((size_t) nchunks);
            // the changed blocks of each chunk, listed only when the ranges are wanted (else counted)
            std::vector<std::vector<int64_t>> changed_blocks(want_ranges ? (size_t) nchunks : 0);
            std::vector<int64_t> changed_count((size_t) nchunks, 0);
            auto note_changed = [&](int64_t c, int64_t b) {
                changed_count[(size_t) c]++;
                if (want_ranges) changed_blocks[(size_t) c].push_back(b);
            };
            const int nt = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, nchunks));
            std::vector<std::unique_ptr<patch::SparseBins>> bins;
            for (int x = 0; x < nt; x++) bins.push_back(patch::take_bins(hist.bins));
            const bool quantized = ggml_is_quantized(t);
            const auto f16_table = t == GGML_TYPE_F16 ? patch::outcome_table<GGML_TYPE_F16>(scale, hist) : nullptr;
            const auto bf16_table = t == GGML_TYPE_BF16 ? patch::outcome_table<GGML_TYPE_BF16>(scale, hist) : nullptr;
            auto patch_chunks = [&](int th, int64_t c0, int64_t c1) {
                BlockScratch sc; sc.init(bs, ts); sc.bound = candidate_bound;
                std::vector<float> before((size_t) bs), target((size_t) bs), after((size_t) bs);
                std::vector<uint8_t> next(ts);
                for (int64_t c = c0; c < c1; c++) {
                    patch::Realized r;   // local (kept in registers), stored once per chunk
                    const int64_t b_end = std::min(nblocks, (c + 1) * patch::kBlocksPerChunk);
                    if (!quantized) {
                        // F32/F16/BF16: each selected element converted alone; the chunk starts on a mask byte
                        const int64_t i0 = c * patch::kBlocksPerChunk;
                        int64_t n_changed = 0;
                        std::vector<int64_t> * listed = want_ranges ? &changed_blocks[(size_t) c] : nullptr;
                        if (t == GGML_TYPE_F16) patch::float_chunk<GGML_TYPE_F16>(bytes, sel, i0, b_end, scale, hist, f16_table->data(), *bins[(size_t) th], r, listed, n_changed);
                        else if (t == GGML_TYPE_BF16) patch::float_chunk<GGML_TYPE_BF16>(bytes, sel, i0, b_end, scale, hist, bf16_table->data(), *bins[(size_t) th], r, listed, n_changed);
                        else patch::float_chunk<GGML_TYPE_F32>(bytes, sel, i0, b_end, scale, hist, nullptr, *bins[(size_t) th], r, listed, n_changed);
                        changed_count[(size_t) c] += n_changed;
                        partial[(size_t) c] = r;
                        continue;
                    }
                    for (int64_t b = c * patch::kBlocksPerChunk; b < b_end; b++) {
                        const int64_t i0 = b * bs;
                        // any selected weight in this block?
                        int64_t nsel = 0;
                        if (bs % 64 == 0) { for (int64_t x = i0 >> 3; x < (i0 + bs) >> 3; x += 8) { uint64_t v; memcpy(&v, sel + x, 8); nsel += popcount64(v); } }
                        else if (bs % 8 == 0) { for (int64_t x = i0 >> 3; x < (i0 + bs) >> 3; x++) nsel += popcount64(sel[x]); }
                        else for (int64_t j = 0; j < bs; j++) nsel += (sel[(i0 + j) >> 3] >> ((i0 + j) & 7)) & 1;
                        if (nsel == 0) continue;
                        r.blocks_touched++; r.selected_weights += (double) nsel;
                        uint8_t * blk = bytes + (size_t) b * ts;
                        dequantize_into(t, blk, before.data(), bs);
                        memcpy(target.data(), before.data(), (size_t) bs * sizeof(float));
                        for_each_selected(sel, i0, bs, [&](int j) { target[j] = scale == 0.0 ? 0.0f : (float) ((double) before[j] * scale); });
                        const int64_t m = i0 / per_matrix;
                        const float * im = importance ? importance + m * n_in + (i0 % n_in) : nullptr;
                        // after: the values of the kept candidate (the block's new bytes)
                        const int kind = requant_block(t, bs, ts, blk, target.data(), im, sel, i0, strategy, sc, next.data(), after.data());
                        r.candidates[kind]++;
                        if (memcmp(next.data(), blk, ts) != 0) { memcpy(blk, next.data(), ts); note_changed(c, b); }
                        // the other weights' figures: this block's sums first (patch::other_sums), then added to the chunk's
                        const patch::OtherSums o = patch::other_sums(before.data(), after.data(), sel, i0, bs);
                        r.others += (double) (bs - nsel); r.others_changed += (double) o.changed;
                        r.other_change_sq += o.change_sq; r.other_value_sq += o.value_sq;
                        for_each_selected(sel, i0, bs, [&](int j) { patch::account(r, *bins[(size_t) th], hist, true, before[j], after[j], scale); });
                    }
                    partial[(size_t) c] = r;
                }
            };
            // each thread reads its own parts of the tensor (~1 MiB each, handed out to whichever
            // thread is free), patches them and writes them (with read / write), so the copies run on
            // every thread and overlap the other threads' patching. Every sum is per chunk (added in
            // chunk order below) or an integer count: the result does not depend on who ran a part.
            const int64_t part_chunks = std::max<int64_t>(1, ((int64_t) 1 << 20) / (patch::kBlocksPerChunk * (int64_t) ts));
            parallel_blocks(nt, 0, nchunks, part_chunks, [&](int th, int64_t c0, int64_t c1) {
                const size_t b0 = (size_t) (c0 * patch::kBlocksPerChunk) * ts, b1 = (size_t) std::min(nblocks, c1 * patch::kBlocksPerChunk) * ts;
                if (read_at.fd >= 0) read_fully({read_at.fd, read_at.offset + (int64_t) b0}, bytes + b0, b1 - b0);
                patch_chunks(th, c0, c1);
                if (write_at.fd >= 0) {
                    write_fully({write_at.fd, write_at.offset + (int64_t) b0}, bytes + b0, b1 - b0);
                    start_writeback(write_at.fd, write_at.offset + (int64_t) b0, b1 - b0);
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
            for (auto & bv : bins) patch::give_bins(std::move(bv));
            for (int64_t n : changed_count) out->bytes_changed += (double) n * (double) ts;
            for (auto & cb : changed_blocks) {
                for (int64_t b : cb) {
                    const double off = (double) b * (double) ts;
                    if (!out->changed.empty() && off - (out->changed[out->changed.size() - 2] + out->changed.back()) <= (double) merge_gap) out->changed.back() = off + (double) ts - out->changed[out->changed.size() - 2];
                    else { out->changed.push_back(off); out->changed.push_back((double) ts); }
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
            Napi::Float64Array cand = Napi::Float64Array::New(e, kCandidates);
            for (int k = 0; k < kCandidates; k++) cand[k] = out->r.candidates[k];
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

void RegisterRequantize(Napi::Env env, Napi::Object exports) {
    exports.Set("requantizeBlocks", Napi::Function::New(env, Export<RequantizeBlocks>));
    exports.Set("patchTensor", Napi::Function::New(env, Export<PatchTensor>));
}
