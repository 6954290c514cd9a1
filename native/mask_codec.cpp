// The bit masks' codec: Golomb-Rice codes of the gaps between set bits. Pure computation: which
// codec a file or an in-memory store uses, and when a mask is kept raw instead, is decided in TS
// (src/core/mask-codec.ts, src/select/file.ts).
//
// An encoded mask of nBits bits (bit i of a mask is bit i & 7 of byte i >> 3):
//   byte 0    header: bits 0-5 the Rice parameter k (0..56); bit 6 zero; bit 7 set when the stream
//             codes the clear bits instead of the set ones (the encoder does so when more than
//             half of the bits are set).
//   bytes 1.. the stream, LSB first (stream bit j is bit j & 7 of byte 1 + (j >> 3); the same as
//             little-endian 64-bit words): for each coded position p in increasing order, the gap
//             g = p - previous - 1 (previous = -1 at the start) as (g >> k) zero bits, a one bit,
//             then the k low bits of g, least significant first. The stream ends with the last
//             code, zero-padded to a whole byte; nothing follows it.
// The number of coded positions is not stored: the decoder is told the mask's count of set bits.
//
// k comes from the density p of the coded bits: the smallest k with (1-p)^(2^k) <= (sqrt 5 - 1)/2,
// the optimal Rice parameter for geometric gaps (Kiely 2004), computed by squaring in doubles only
// (no libm: the same k everywhere). A code longer than the mask plus its header (possible only for
// clustered masks) is redone with k = 0, whose stream is at most nBits bits: an encoded mask is
// never longer than ceil(nBits / 8) + 1 bytes.
#include "common.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr unsigned kMaxK = 56;            // k bits fit the writer's window beside 7 pending bits
constexpr uint64_t kMaxBits = (1ull << 53) - 1;

inline void store_le64(uint8_t * p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

inline unsigned ctz64(uint64_t x) { return (unsigned) __builtin_ctzll(x); }   // x != 0

// The mask as 64-bit words: the whole ones read in place, the last partial one (bits at and past
// n_bits cleared) copied.
struct MaskWords {
    const uint8_t * bytes;
    uint64_t n_bits;
    size_t n_bytes;      // ceil(n_bits / 8)
    size_t full_words;   // floor(n_bits / 64)
    size_t n_words;      // ceil(n_bits / 64)
    uint64_t tail = 0;   // word full_words when n_bits % 64, bits past n_bits cleared
    MaskWords(const uint8_t * b, uint64_t n) : bytes(b), n_bits(n), n_bytes((size_t) ((n + 7) / 8)), full_words((size_t) (n / 64)), n_words((size_t) ((n + 63) / 64)) {
        if (n % 64) {
            for (size_t i = full_words * 8; i < n_bytes; i++) tail |= (uint64_t) bytes[i] << (8 * (i - full_words * 8));
            tail &= (1ull << (n % 64)) - 1;
        }
    }
    uint64_t tail_mask() const { return n_bits % 64 ? (1ull << (n_bits % 64)) - 1 : ~0ull; }
};

// Set bits in [begin, end) of a mask: bytes one at a time up to a byte boundary, 8 bytes at a time,
// then the rest. Inlined into its callers, so that the popcnt-target one counts with the instruction.
inline uint64_t pop_swar(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (x * 0x0101010101010101ull) >> 56;
}
#if defined(__GNUC__)
#define MATHNEURO_INLINE inline __attribute__((always_inline))
#define MATHNEURO_POP(hw, x) ((hw) ? (uint64_t) __builtin_popcountll(x) : pop_swar(x))
#else
#define MATHNEURO_INLINE inline
#define MATHNEURO_POP(hw, x) pop_swar(x)
#endif
template <bool Hw> MATHNEURO_INLINE uint64_t count_range(const uint8_t * bytes, uint64_t begin, uint64_t end) {
    uint64_t n = 0, i = begin;
    for (; i < end && (i & 7); i++) n += (bytes[i >> 3] >> (i & 7)) & 1;
    uint64_t b = i >> 3;
    const uint64_t whole_end = end >> 3;   // bytes whose 8 bits all lie before end
    for (; b + 8 <= whole_end; b += 8) n += MATHNEURO_POP(Hw, load_le64(bytes + b));
    for (; b < whole_end; b++) n += MATHNEURO_POP(Hw, (uint64_t) bytes[b]);
    for (i = std::max(i, whole_end << 3); i < end; i++) n += (bytes[i >> 3] >> (i & 7)) & 1;
    return n;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__POPCNT__)
__attribute__((target("popcnt"))) uint64_t count_range_hw(const uint8_t * bytes, uint64_t begin, uint64_t end) { return count_range<true>(bytes, begin, end); }
uint64_t count_bits_in(const uint8_t * bytes, uint64_t begin, uint64_t end) {
    static const bool hw = (__builtin_cpu_init(), __builtin_cpu_supports("popcnt"));
    return hw ? count_range_hw(bytes, begin, end) : count_range<false>(bytes, begin, end);
}
#elif defined(__GNUC__)
uint64_t count_bits_in(const uint8_t * bytes, uint64_t begin, uint64_t end) { return count_range<true>(bytes, begin, end); }
#else
uint64_t count_bits_in(const uint8_t * bytes, uint64_t begin, uint64_t end) { return count_range<false>(bytes, begin, end); }
#endif

// Set bits of a whole mask.
uint64_t popcount_mask(const MaskWords & m) { return count_bits_in(m.bytes, 0, m.n_bits); }

// The Rice parameter for `coded` positions among n_bits (see the top of the file).
unsigned rice_parameter(uint64_t coded, uint64_t n_bits) {
    if (coded == 0 || n_bits == 0) return 0;
    double x = 1.0 - (double) coded / (double) n_bits;
    unsigned k = 0;
    while (k < kMaxK && x + x * x > 1.0) { x *= x; k++; }
    return k;
}

// Room past `limit` in the output buffer: a code starts at most `limit` bytes in, and the longest
// write from there (a run of zeros, then 8-byte stores) ends within this many bytes past it.
constexpr size_t kSlack = 64;

// Words are read a block at a time: the positions of the block's coded bits are gathered first,
// then coded. Gathering takes `Steps` unconditional steps per word (position of the lowest bit;
// advance when there was one) and loops only for words with more: for a density fitting Steps,
// few branches go the unexpected way (one per word would, were each word's bits looped over).
constexpr size_t kBlockWords = 64;

// Encodes into out (limit + kSlack bytes); the length, or 0 when the code would pass `limit`.
// The stream is written through a 64-bit window: each code is OR-ed in above the nacc (< 8)
// pending bits, the window is stored whole and the output advances by its complete bytes (no
// branch per code; a code of up to 56 bits fits the window).
template <bool Invert, int Steps, int Group>
size_t encode_with(const MaskWords & m, unsigned k, uint8_t * out, size_t limit) {
    out[0] = (uint8_t) (k | (Invert ? 0x80u : 0u));
    size_t pos = 1;      // the byte the window starts at
    uint64_t acc = 0;    // the window: pending bits from bit 0
    unsigned nacc = 0;   // how many (< 8 between codes)
    const uint64_t low_mask = (1ull << k) - 1;
    const unsigned nb = k + 1;
    uint64_t next = 0;   // the previous coded position + 1
    const uint8_t * const bytes = m.bytes;
    uint32_t found[kBlockWords * 64 + Steps];
    // `bits` (< 2^n) as the next n <= 56 stream bits
    auto put = [&](uint64_t bits, unsigned n) {
        acc |= bits << nacc;
        nacc += n;
        store_le64(out + pos, acc);
        pos += nacc >> 3;
        acc >>= nacc & 56;
        nacc &= 7;
    };
    // the coded bits of word x at found[n...], as positions from the block's start + base
    auto gather = [&found](uint64_t x, uint32_t base, size_t n) {
        for (int s = 0; s < Steps; s++) {
            found[n] = base + ctz64(x | (1ull << 63));   // (a zero word writes a position not kept)
            n += x != 0;
            x &= x - 1;
        }
        while (x) { found[n++] = base + ctz64(x); x &= x - 1; }
        return n;
    };
    // one code, of any length
    auto code_one = [&](uint64_t g) -> bool {
        const uint64_t q = g >> k;
        const uint64_t c = 1 | ((g & low_mask) << 1);
        if (q + nb <= 56) {
            put(c << q, (unsigned) (q + nb));
        } else {
            // a long run of zeros: whole zero bytes after the pending bits, then the code
            const uint64_t bits = nacc + q;
            if (pos + bits / 8 > limit) return false;
            store_le64(out + pos, acc);
            for (size_t z = 8; z < bits / 8 + 8; z += 8) store_le64(out + pos + z, 0);
            pos += bits / 8;
            acc = 0;
            nacc = (unsigned) (bits % 8);
            if (nb > 56) { put(1, 1); put(c >> 1, k); }
            else put(c, nb);
        }
        return true;
    };
    // the codes of found[0..n) (positions from block_start): Group at a time in one write when
    // they fit 56 bits together (the window's state is a chain through every write)
    auto code = [&](uint64_t block_start, size_t n) -> bool {
        size_t j = 0;
        for (; j + Group <= n; j += Group) {
            if (pos > limit) return false;
            uint64_t g[Group], len[Group];
            uint64_t p = block_start + found[j];
            g[0] = p - next;
            for (int u = 1; u < Group; u++) { const uint64_t pu = block_start + found[j + u]; g[u] = pu - p - 1; p = pu; }
            uint64_t total = 0;
            for (int u = 0; u < Group; u++) { len[u] = (g[u] >> k) + nb; total += len[u]; }
            if (total <= 56) {
                uint64_t bits = 0;
                unsigned at = 0;
                for (int u = 0; u < Group; u++) { bits |= ((1 | ((g[u] & low_mask) << 1)) << (g[u] >> k)) << at; at += (unsigned) len[u]; }
                put(bits, at);
            } else {
                for (int u = 0; u < Group; u++) { if (pos > limit || !code_one(g[u])) return false; }
            }
            next = p + 1;
        }
        for (; j < n; j++) {
            if (pos > limit) return false;
            const uint64_t p = block_start + found[j];
            if (!code_one(p - next)) return false;
            next = p + 1;
        }
        return true;
    };
    for (size_t b0 = 0; b0 < m.full_words; b0 += kBlockWords) {
        const size_t b1 = std::min(m.full_words, b0 + kBlockWords);
        size_t n = 0;
        for (size_t i = b0; i < b1; i++) {
            const uint64_t x = load_le64(bytes + 8 * i);
            n = gather(Invert ? ~x : x, (uint32_t) ((i - b0) * 64), n);
        }
        if (!code((uint64_t) b0 * 64, n)) return 0;
    }
    if (m.n_words > m.full_words) {
        const size_t n = gather(Invert ? ~m.tail & m.tail_mask() : m.tail, 0, 0);
        if (!code((uint64_t) m.full_words * 64, n)) return 0;
    }
    const size_t tail = (nacc + 7) / 8;
    if (pos + tail > limit) return 0;
    store_le64(out + pos, acc);
    return pos + tail;
}

// Encodes with the gathering that suits the density of coded bits (see kBlockWords): the fewest
// steps that cover a word's coded bits 19 times in 20 were they spread at random (Poisson), up to
// 8 (16 was no faster on llama-1b's masks of 8% density); and codes written 4, 2 or 1 at a time
// so that a group's mean length (k + 1 + about 1.6 for the unary part) stays near 42 bits.
template <bool Invert, int Steps>
size_t encode_grouped(const MaskWords & m, unsigned k, uint8_t * out, size_t limit) {
    if (k <= 8) return encode_with<Invert, Steps, 4>(m, k, out, limit);
    if (k <= 19) return encode_with<Invert, Steps, 2>(m, k, out, limit);
    return encode_with<Invert, Steps, 1>(m, k, out, limit);
}

size_t encode_with(const MaskWords & m, bool invert, uint64_t coded, unsigned k, uint8_t * out, size_t limit) {
    const double per_word = m.n_words ? (double) coded / (double) m.n_words : 0;
    using Encoder = size_t (*)(const MaskWords &, unsigned, uint8_t *, size_t);
    static constexpr Encoder plain[] = {encode_grouped<false, 1>, encode_grouped<false, 2>, encode_grouped<false, 4>, encode_grouped<false, 8>};
    static constexpr Encoder inverted[] = {encode_grouped<true, 1>, encode_grouped<true, 2>, encode_grouped<true, 4>, encode_grouped<true, 8>};
    const int s = per_word < 0.355 ? 0 : per_word < 0.82 ? 1 : per_word < 1.97 ? 2 : 3;
    return (invert ? inverted : plain)[s](m, k, out, limit);
}

struct Encoded { uint8_t * data = nullptr; size_t size = 0; ~Encoded() { free(data); } };

void encode_mask(const uint8_t * bytes, uint64_t n_bits, Encoded & result) {
    const MaskWords m(bytes, n_bits);
    const uint64_t ones = popcount_mask(m);
    const bool invert = ones > n_bits - ones;
    const uint64_t coded = invert ? n_bits - ones : ones;
    const unsigned k = rice_parameter(coded, n_bits);
    // at most the mask and its header; and a code's bits are at most coded * (k + 1) plus the
    // gaps' sum (at most n_bits - coded) >> k: allocated as such (the fresh pages of an
    // allocation as large as the mask cost more than the code itself on some machines)
    const size_t limit = m.n_bytes + 1;
    const size_t bound = (size_t) std::min<uint64_t>(limit, 1 + (coded * (k + 1) + ((n_bits - coded) >> k) + 7) / 8);
    result.data = (uint8_t *) malloc(bound + kSlack);
    if (!result.data) throw std::bad_alloc();
    size_t size = encode_with(m, invert, coded, k, result.data, bound);
    if (size == 0 && k > 0) size = encode_with(m, invert, coded, 0, result.data, limit);   // (bound == limit here)
    if (size == 0) throw CodedError("EIO", "encodeMask: the k = 0 code passed its bound");   // cannot happen (see the top)
    if (uint8_t * shrunk = (uint8_t *) realloc(result.data, size)) result.data = shrunk;
    result.size = size;
}

[[noreturn]] void corrupt(const std::string & why) { throw CodedError("EDATA", "corrupt mask code: " + why); }

struct CodeHeader { unsigned k; bool invert; uint64_t coded; };

// The checks that need no decoding: the header, the count, and a stream long enough for its codes.
CodeHeader check_code(const uint8_t * enc, size_t len, uint64_t n_bits, uint64_t count) {
    if (len < 1) corrupt("no header");
    const unsigned header = enc[0];
    const unsigned k = header & 63;
    if ((header & 0x40) || k > kMaxK) corrupt("header byte " + std::to_string(header));
    if (count > n_bits) corrupt(std::to_string(count) + " set bits in a mask of " + std::to_string(n_bits));
    const bool invert = (header & 0x80) != 0;
    const uint64_t coded = invert ? n_bits - count : count;
    if (coded > (uint64_t) (len - 1) * 8 / (k + 1)) corrupt("truncated");   // each code takes at least k + 1 bits
    return CodeHeader{k, invert, coded};
}

// Decodes into out (ceil(n_bits / 8) zeroed bytes).
void decode_mask(const uint8_t * enc, size_t len, uint64_t n_bits, uint64_t count, uint8_t * out) {
    const CodeHeader h = check_code(enc, len, n_bits, count);
    const unsigned k = h.k;
    const bool invert = h.invert;
    const uint64_t coded = h.coded;
    const size_t slen = len - 1;
    const uint64_t total_bits = (uint64_t) slen * 8;
    const size_t n_bytes = (size_t) ((n_bits + 7) / 8);
    if (invert && n_bytes) {
        memset(out, 0xff, n_bytes);
        if (n_bits % 8) out[n_bytes - 1] = (uint8_t) ((1u << (n_bits % 8)) - 1);
    }
    // the stream with 16 zero bytes after it: a 64-bit read at any byte up to slen stays inside
    std::vector<uint8_t> buf(slen + 16, 0);
    if (slen) memcpy(buf.data(), enc + 1, slen);
    const uint8_t * s = buf.data();
    auto peek = [s](uint64_t bit) { return load_le64(s + (bit >> 3)) >> (bit & 7); };   // >= 57 valid bits
    const uint64_t low_mask = (1ull << k) - 1;
    uint64_t bit = 0;
    uint64_t next = 0;   // the lowest position the next code may name (previous + 1)
    const unsigned nb = k + 1;
    for (uint64_t c = 0; c < coded; c++) {
        uint64_t q, low;
        const uint64_t v = peek(bit);
        const unsigned t = v ? ctz64(v) : 64;
        if (t + nb <= 57) {
            // the whole code inside the window
            q = t;
            low = (v >> (t + 1)) & low_mask;
            bit += t + nb;
        } else {
            // a long run of zeros, or a code across the window's end
            q = 0;
            for (;;) {
                const uint64_t w = peek(bit);
                if (w) { const unsigned z = ctz64(w); q += z; bit += z + 1; break; }
                const unsigned skip = 64 - (unsigned) (bit & 7);
                q += skip; bit += skip;
                if (bit > total_bits) corrupt("truncated");
            }
            if (bit + k > total_bits) corrupt("truncated");
            low = peek(bit) & low_mask;
            bit += k;
            if (q > ((n_bits - next) >> k)) corrupt("a position past the end of the mask");
        }
        if (bit > total_bits) corrupt("truncated");
        const uint64_t g = (q << k) | low;
        if (g >= n_bits - next) corrupt("a position past the end of the mask");   // positions left: next..n_bits-1
        const uint64_t p = next + g;
        if (invert) out[p >> 3] &= (uint8_t) ~(1u << (p & 7));
        else out[p >> 3] |= (uint8_t) (1u << (p & 7));
        next = p + 1;
    }
    if ((bit + 7) / 8 != slen) corrupt("bytes after the last code");
    if ((bit & 7) && (s[bit >> 3] >> (bit & 7)) != 0) corrupt("nonzero padding");
}

// A positional argument: an integer in [0, 2^53 - 1].
uint64_t RequireCountArgument(const Napi::Value & v, const char * what) {
    if (!v.IsNumber()) throw CodedError("EUSAGE", std::string(what) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > (double) kMaxBits)
        throw CodedError("EUSAGE", std::string(what) + " must be an integer in [0, 2^53 - 1]");
    return (uint64_t) d;
}

// A mask of n_bits bits is ceil(n_bits / 8) bytes, no more, no fewer.
void require_mask_bytes(const Napi::Uint8Array & mask, uint64_t n_bits, const char * fn) {
    if ((uint64_t) mask.ByteLength() != (n_bits + 7) / 8)
        throw CodedError("EUSAGE", std::string(fn) + ": a mask of " + std::to_string(n_bits) + " bits has " + std::to_string((n_bits + 7) / 8) + " bytes, not " + std::to_string(mask.ByteLength()));
}

Napi::Uint8Array ExternalBytes(Napi::Env env, uint8_t *& data, size_t size) {
    if (size == 0) return Napi::Uint8Array::New(env, 0);
    Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, data, size, [](Napi::Env, void * d) { free(d); });
    data = nullptr;   // the ArrayBuffer owns it now
    return Napi::Uint8Array::New(env, size, buffer, 0);
}

// encodeMask(mask: Uint8Array, nBits): Promise<Uint8Array>, on a libuv thread. The mask must not
// change until the promise settles.
Napi::Value EncodeMask(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) throw CodedError("EUSAGE", "encodeMask(mask, nBits)");
    auto mask = RequireTypedArray<uint8_t>(info[0], "mask");
    const uint64_t n_bits = RequireCountArgument(info[1], "nBits");
    require_mask_bytes(mask, n_bits, "encodeMask");
    const uint8_t * bytes = mask.Data();
    auto result = std::make_shared<Encoded>();
    auto * w = new TaskWorker(env,
        [=]() { encode_mask(bytes, n_bits, *result); },
        [result](Napi::Env e) -> Napi::Value { return ExternalBytes(e, result->data, result->size); });
    w->Keep(info[0]);
    return w->Start();
}

// decodeMask(encoded: Uint8Array, nBits, count, into?: Uint8Array): Uint8Array, a new mask or `into`
// (ceil(nBits / 8) bytes, overwritten). EDATA for a corrupt code (`into` then holds no mask).
Napi::Value DecodeMask(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3) throw CodedError("EUSAGE", "decodeMask(encoded, nBits, count)");
    auto enc = RequireTypedArray<uint8_t>(info[0], "encoded");
    const uint64_t n_bits = RequireCountArgument(info[1], "nBits");
    const uint64_t count = RequireCountArgument(info[2], "count");
    const size_t n_bytes = (size_t) ((n_bits + 7) / 8);
    check_code(enc.Data(), enc.ByteLength(), n_bits, count);   // a hostile header or count fails before the mask is allocated
    if (info.Length() > 3 && !info[3].IsUndefined()) {
        // into a mask the caller reuses (decoding a selection file's masks into fresh memory, this
        // machine spent as long in page faults and clearing as in the decoding), cleared here first
        auto into = RequireTypedArray<uint8_t>(info[3], "into");
        require_mask_bytes(into, n_bits, "decodeMask");
        const uint8_t * e0 = enc.Data(), * i0 = into.Data();
        if (n_bytes && enc.ByteLength() && i0 < e0 + enc.ByteLength() && e0 < i0 + n_bytes) throw CodedError("EUSAGE", "decodeMask: `into` overlaps the code");
        if (n_bytes) memset(into.Data(), 0, n_bytes);
        decode_mask(enc.Data(), enc.ByteLength(), n_bits, count, into.Data());
        return into;
    }
    struct Buffer { uint8_t * data = nullptr; ~Buffer() { free(data); } } out;
    if (n_bytes) {
        out.data = (uint8_t *) calloc(n_bytes, 1);
        if (!out.data) throw CodedError("EIO", "out of memory for a mask of " + std::to_string(n_bits) + " bits");
    }
    decode_mask(enc.Data(), enc.ByteLength(), n_bits, count, out.data);
    return ExternalBytes(env, out.data, n_bytes);
}

// countMaskBits(mask, nBits, partBits): Float64Array, the set bits of each part [i partBits, (i + 1)
// partBits) of a mask of nBits bits (a tensor's matrices: select's per-matrix counts), on the calling
// thread (a pass at memory speed: ~10 ms for 120 MB of mask).
Napi::Value CountMaskBits(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3) throw CodedError("EUSAGE", "countMaskBits(mask, nBits, partBits)");
    auto mask = RequireTypedArray<uint8_t>(info[0], "mask");
    const uint64_t n_bits = RequireCountArgument(info[1], "nBits");
    const uint64_t part = RequireCountArgument(info[2], "partBits");
    require_mask_bytes(mask, n_bits, "countMaskBits");
    if (part == 0 || n_bits % part != 0) throw CodedError("EUSAGE", "countMaskBits: partBits must be positive and divide nBits");
    const uint64_t parts = n_bits / part;
    Napi::Float64Array out = Napi::Float64Array::New(env, (size_t) parts);
    for (uint64_t i = 0; i < parts; i++) out[(size_t) i] = (double) count_bits_in(mask.Data(), i * part, (i + 1) * part);
    return out;
}

}  // namespace

void RegisterMaskCodec(Napi::Env env, Napi::Object exports) {
    exports.Set("encodeMask", Napi::Function::New(env, Export<EncodeMask>));
    exports.Set("decodeMask", Napi::Function::New(env, Export<DecodeMask>));
    exports.Set("countMaskBits", Napi::Function::New(env, Export<CountMaskBits>));
}
