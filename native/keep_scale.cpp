// Keep-scale re-rounding codes: reading and writing the integer code of one weight of a block of
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K in place (bit layouts as ggml-quants.c has them).
#include "codec.h"

#include <cstring>

namespace codec {

namespace {

// ---------------------------------------------------------------------------------------------
// Keep-scale re-rounding: a weight of these formats is a * q + b with an integer code q in
// [qmin, qmax] and (a, b) fixed by the block's scales. Changing only the codes of selected weights
// leaves every other weight of the block bit-identical.

float h2f(const uint8_t * p) { ggml_fp16_t h; memcpy(&h, p, 2); return ggml_fp16_to_fp32(h); }

void scale_min_k4(int j, const uint8_t * q, uint8_t * d, uint8_t * m) {
    if (j < 4) { *d = q[j] & 63; *m = q[j + 4] & 63; }
    else { *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4); }
}

}  // namespace

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

}  // namespace codec
