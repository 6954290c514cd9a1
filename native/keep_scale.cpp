// Keep-scale re-rounding codes: reading and writing the integer code of one weight of a block of
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K in place (bit layouts as ggml-quants.c has them).
#include "codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace codec {

namespace {

// ---------------------------------------------------------------------------------------------
// Keep-scale re-rounding: a weight of these formats is a * q + b with an integer code q in
// [qmin, qmax] and (a, b) fixed by the block's scales. Changing only the codes of selected weights
// leaves every other weight of the block bit-identical.


}  // namespace

bool keep_scale_supported(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
            return true;
        default: return false;
    }
}

// Sub-blocks whose scale (and, for Q4_K/Q5_K, min) can be raised alone: Q6_K (16 weights, int8
// scales), Q4_K and Q5_K (32 weights, 6-bit scale and min). 0 for the other types.
int rescale_sub_block_size(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q6_K: return 16;
        case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: return 32;
        default: return 0;
    }
}

namespace {

uint8_t * q6k_scale(uint8_t * b, int sub) {
    const int p = sub * 16, h = p / 128, g = (p % 128) / 32, l16 = (p % 32) / 16;
    return b + 192 + h * 8 + l16 + 2 * g;
}

void put_scale_min_k4(int j, uint8_t * q, int d, int m) {
    if (j < 4) { q[j] = (uint8_t) ((q[j] & 0xC0) | d); q[j + 4] = (uint8_t) ((q[j + 4] & 0xC0) | m); }
    else {
        q[j + 4] = (uint8_t) ((d & 0xF) | ((m & 0xF) << 4));
        q[j - 4] = (uint8_t) ((q[j - 4] & 0x3F) | ((d >> 4) << 6));
        q[j] = (uint8_t) ((q[j] & 0x3F) | ((m >> 4) << 6));
    }
}

}  // namespace

namespace {

// The range [lo, hi] of a sub-block's targets.
void target_range(const float * tg, int n, double & lo, double & hi) {
    lo = INFINITY; hi = -INFINITY;
    for (int i = 0; i < n; i++) { lo = std::min(lo, (double) tg[i]); hi = std::max(hi, (double) tg[i]); }
}

// Raises the scale (and for Q4_K/Q5_K first the min) of sub-block `sub` by the fewest steps that
// bring [lo, hi] within half a code step of its code range. False when a scale would pass its
// largest value (the block is then partly changed).
bool fit_sub_block(ggml_type t, uint8_t * b, int sub, double lo, double hi) {
    if (t == GGML_TYPE_Q6_K) {
        const float d = h2f(b + 208);
        int8_t * scp = (int8_t *) q6k_scale(b, sub);
        if (!(d != 0) || !std::isfinite(d) || *scp == 0) return false;
        const int dir = *scp > 0 ? 1 : -1;
        for (int sc = *scp;; sc += dir) {
            if (sc > 127 || sc < -128) return false;   // ggml stores the largest scale as -128
            const double a = (double) (d * (float) sc);
            const double q1 = lo / a, q2 = hi / a;
            if (std::min(q1, q2) >= -32.5 && std::max(q1, q2) <= 31.5) { *scp = (int8_t) sc; return true; }
        }
    }
    const float d = h2f(b), dmin = h2f(b + 2);
    uint8_t * scales = b + 4;
    uint8_t sc0, m0; scale_min_k4(sub, scales, &sc0, &m0);
    const int qmax = t == GGML_TYPE_Q5_K ? 31 : 15;
    if (!(d > 0) || !std::isfinite(d) || !std::isfinite(dmin) || sc0 == 0) return false;
    int sc = sc0, m = m0;
    for (;; m++) {   // the min first (it moves the bottom of the range), then the scale
        if (m > 63) return false;
        if (lo >= -(double) (dmin * (float) m) - 0.5 * (double) (d * (float) sc)) break;
        if (!(dmin > 0)) return false;
    }
    for (;; sc++) {
        if (sc > 63) return false;
        const double a = (double) (d * (float) sc), bb = -(double) (dmin * (float) m);
        if ((hi - bb) / a <= qmax + 0.5 && (lo - bb) / a >= -0.5) break;
    }
    put_scale_min_k4(sub, scales, sc, m);
    return true;
}

// The smallest fp16 value >= x (x > 0, finite); 0 when it overflows.
float f16_ceil(double x) {
    ggml_fp16_t h = ggml_fp32_to_fp16((float) x);
    for (int k = 0; k < 4 && (double) ggml_fp16_to_fp32(h) < x; k++) h = (ggml_fp16_t) (h + 1);
    const float f = ggml_fp16_to_fp32(h);
    return std::isfinite(f) && (double) f >= x ? f : 0.0f;
}

}  // namespace

double rerounded_error_bound(ggml_type t, const uint8_t * b, int sub, const float * tg) {
    const int n = rescale_sub_block_size(t);
    const CodeSlot s = read_slot(t, b, sub * n);
    const double a = s.a, off = s.b, aa = std::fabs(a);
    if (!(aa > 0) || !std::isfinite(a) || !std::isfinite(off)) return 0;
    // x = (target - b) / a as a product with 1 / a: at most |x| 2^-50 from the quotient (three
    // roundings); the distance from x to the nearest code in [qmin, qmax], times |a|, is the target's
    // distance from the grid, which moves by at most |a| times that; ggml's float value of a code q
    // lies within 2^-22 (|a| (|q| + 1) + |b|) (+ a subnormal step) of a q + b (two float roundings;
    // the code re-rounding picks may be q's neighbour near a midpoint)
    const double inv = 1.0 / a, qmin = s.qmin, qmax = s.qmax;
    constexpr double kRound = 0x1.8p52;   // x + kRound - kRound: x to the nearest integer (|x| < 2^51)
    // two lanes without branches (the order of a lower bound's terms does not matter)
    double lb[2] = {0, 0};
    bool bad = false;
    const double base_slack = std::fabs(off) * 0x1p-22 + 0x1p-140;
    for (int i = 0; i < n; i += 2) {
        for (int l = 0; l < 2; l++) {
            const double x = ((double) tg[i + l] - off) * inv;
            const double ax = std::fabs(x);
            bad |= !(ax < 0x1p50);   // (and NaN)
            const double r = (x + kRound) - kRound;
            const double q = r < qmin ? qmin : (r > qmax ? qmax : r);
            const double slack = aa * ((ax + 1) * 0x1p-50 + (std::fabs(q) + 1) * 0x1p-22) + base_slack;
            const double d = std::max(0.0, aa * std::fabs(x - q) - slack);
            lb[l] += d * d;
        }
    }
    return bad ? 0 : lb[0] + lb[1];
}

bool fit_sub_block_scale(ggml_type t, uint8_t * b, int sub, const float * tg) {
    const int n = rescale_sub_block_size(t);
    if (n == 0) return false;
    double lo, hi; target_range(tg, n, lo, hi);
    if (!std::isfinite(lo) || !std::isfinite(hi)) return false;
    return fit_sub_block(t, b, sub, lo, hi);
}

// Every weight of sub-block `sub` to the code nearest its target under the block's scales.
void reround_sub_block_codes(ggml_type t, uint8_t * b, int sub, const float * tg) {
    const int n = rescale_sub_block_size(t);
    const CodeSlot s = read_slot(t, b, sub * n);   // one scale (and min) for the whole sub-block
    int q[32];
    for (int i = 0; i < n; i++) {   // the divisions first, independent of each other
        const double qf = ((double) tg[i] - s.b) / s.a;
        q[i] = (int) round_half_away(std::max((double) s.qmin, std::min((double) s.qmax, qf)));
    }
    // the type fixed for the loop (write_code's switch folded away)
    switch (t) {
        case GGML_TYPE_Q4_K: for (int i = 0; i < n; i++) write_code(GGML_TYPE_Q4_K, b, sub * n + i, q[i]); break;
        case GGML_TYPE_Q5_K: for (int i = 0; i < n; i++) write_code(GGML_TYPE_Q5_K, b, sub * n + i, q[i]); break;
        case GGML_TYPE_Q6_K: for (int i = 0; i < n; i++) write_code(GGML_TYPE_Q6_K, b, sub * n + i, q[i]); break;
        default: for (int i = 0; i < n; i++) write_code(t, b, sub * n + i, q[i]); break;
    }
}

// Block rescale: the super-block scale (and min scale) raised just enough that every sub-block can
// cover its targets, every sub-block scale carried over (rounded up) to the new super-block scale
// and fitted (tg: the block's targets); the caller then re-rounds every weight. No search, no imatrix.
static bool rescale_block_by(ggml_type t, uint8_t * b, const float * tg, double margin);

bool rescale_block_scales(ggml_type t, uint8_t * b, const float * tg) {
    // the super-block scales are estimated from the targets; where fp16 and 6-bit rounding leave a
    // sub-block short, try again from the original with a little more room
    uint8_t orig[256];
    const size_t ts = ggml_type_size(t);
    if (ts > sizeof orig) return false;
    memcpy(orig, b, ts);
    for (double margin : {1.0, 1.02, 1.06, 1.15}) {
        if (rescale_block_by(t, b, tg, margin)) return true;
        memcpy(b, orig, ts);
    }
    return false;
}

static bool rescale_block_by(ggml_type t, uint8_t * b, const float * tg, double margin) {
    const int n = rescale_sub_block_size(t);
    if (n == 0) return false;
    const int nsub = 256 / n;
    double lo[16], hi[16];
    for (int sub = 0; sub < nsub; sub++) {
        target_range(tg + sub * n, n, lo[sub], hi[sub]);
        if (!std::isfinite(lo[sub]) || !std::isfinite(hi[sub])) return false;
    }
    if (t == GGML_TYPE_Q6_K) {
        const float d = h2f(b + 208);   // negative when ggml's largest sub-block scale was negative
        if (!(d != 0) || !std::isfinite(d)) return false;
        const double ad = std::fabs((double) d);
        double need = ad;
        for (int sub = 0; sub < nsub; sub++) {
            const int8_t sc = *(int8_t *) q6k_scale(b, sub);
            // |a| that covers [lo, hi]: a > 0 spans [-32.5a, 31.5a], a < 0 spans [-31.5|a|, 32.5|a|]
            const bool pos = (d > 0) == (sc >= 0);
            const double a = pos ? std::max(hi[sub] / 31.5, -lo[sub] / 32.5) : std::max(hi[sub] / 32.5, -lo[sub] / 31.5);
            need = std::max(need, a * margin / 127.0);
        }
        if (need > ad) {
            const float ad2 = f16_ceil(need);
            if (!(ad2 > 0)) return false;
            for (int sub = 0; sub < nsub; sub++) {
                int8_t * scp = (int8_t *) q6k_scale(b, sub);
                const int sc = *scp, mag = std::max(1, std::min(127, (int) std::ceil(std::abs(sc) * ad / (double) ad2)));
                *scp = (int8_t) (sc >= 0 ? mag : -mag);
            }
            ggml_fp16_t h = ggml_fp32_to_fp16(d > 0 ? ad2 : -ad2); memcpy(b + 208, &h, 2);
        }
    } else {
        const float d = h2f(b), dmin = h2f(b + 2);
        if (!(d > 0) || !std::isfinite(d) || !(dmin >= 0) || !std::isfinite(dmin)) return false;
        const int qmax = t == GGML_TYPE_Q5_K ? 31 : 15;
        uint8_t * scales = b + 4;
        double need_d = d, need_dmin = dmin;
        for (int sub = 0; sub < nsub; sub++) {
            uint8_t sc, m; scale_min_k4(sub, scales, &sc, &m);
            const double off = std::max((double) (dmin * (float) m), -lo[sub]);   // b = -off <= lo
            const double a = std::max((double) (d * (float) sc), (hi[sub] + off) / (qmax + 0.5));
            need_dmin = std::max(need_dmin, off * margin / 63.0);
            need_d = std::max(need_d, a * margin / 63.0);
        }
        const float d2 = need_d > d ? f16_ceil(need_d) : d, dmin2 = need_dmin > dmin ? f16_ceil(need_dmin) : dmin;
        if (!(d2 > 0) || (need_dmin > dmin && !(dmin2 > 0))) return false;
        for (int sub = 0; sub < nsub; sub++) {
            uint8_t sc, m; scale_min_k4(sub, scales, &sc, &m);
            const int sc2 = std::max(1, std::min(63, (int) std::ceil(sc * (double) d / (double) d2)));
            const int m2 = dmin2 > 0 ? std::min(63, (int) std::ceil(m * (double) dmin / (double) dmin2)) : 0;
            put_scale_min_k4(sub, scales, sc2, m2);
        }
        ggml_fp16_t h = ggml_fp32_to_fp16(d2); memcpy(b, &h, 2);
        h = ggml_fp32_to_fp16(dmin2); memcpy(b + 2, &h, 2);
    }
    // the scales only: every sub-block's codes are re-rounded by the caller (a sub-block's fit reads
    // only the block's scales and its own scale and min, its re-rounding writes only its own codes)
    for (int sub = 0; sub < nsub; sub++) if (!fit_sub_block(t, b, sub, lo[sub], hi[sub])) return false;
    return true;
}

}  // namespace codec
