// KL divergence between rows of logits, off the JS thread: klRows(p, q, nVocab) -> per row
// KL(softmax(p) || softmax(q)) in nats and whether the two rows' top tokens agree. A pure function
// (no model, no policy): the kl task (src/eval/tasks/kl.ts) calls it on each prompt's logits of the
// reference (p) and the model (q). It computes what src/eval/divergence.ts's logSoftmaxRow +
// klOfLogRows compute in float64 (the tests' reference), in two passes over a row instead of five
// and two exp() per token instead of three:
//   a = p - max p, b = q - max q, Sp = sum e^a, Sq = sum e^b, Sd = sum e^a (p - q)
//   KL = sum_i softmax(p)_i (log softmax(p)_i - log softmax(q)_i) = Sd / Sp - (lse p - lse q),
//   lse p = max p + log Sp (sum_i softmax(p)_i = 1 carries the constant terms out of the sum).
// Every sum is accumulated in double. A token p gives no mass (p_i = -inf) adds nothing, as in
// klOfLogRows; one q gives none while p does makes the row's KL +inf.
#include "common.h"
#include "napi_util.h"

#include <cmath>
#include <cstring>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <limits>
#include <thread>
#include <vector>

// GCC: comparisons may be turned into selects (no FP trap is ever enabled in a node process) and a*b+c
// is never fused, so the vectorized loops give the same bits in every build and on every CPU. On
// x86-64 Linux the row loop is also built for AVX2 and AVX-512 and the loader picks the widest this
// CPU runs (the same arithmetic, hence the same results).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
// (x86-64-v3/v4 are GCC 11 names; ifunc needs glibc)
#define MATHNEURO_KL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MATHNEURO_KL_CLONES
#endif

namespace {

struct RowResult { double kl; bool same_top; };

// e^x in double for x <= 0 (what the sums need: x = logit - max), within 2 ulp of exp() where that is
// a normal number (the kl-rows test checks rows against the float64 JS reference), rounded into the
// denormals below e^-708 as exp() is, 0 below e^-746; NaN stays NaN. exp() itself takes a slow path
// for every term that underflows, and a model's logits can spread that far (21 ns per vocabulary
// entry on the synthetic benchmark model, against under 4 here): this is plain arithmetic, so the
// compiler vectorizes the loop that calls it. Range reduction x = k ln2 + r, |r| <= ln2/2 (ln2 in two
// parts, Cody-Waite), e^r by its Taylor series to r^13/13! (the next term is < 5e-18), times 2^k as
// two powers of two built in the exponent bits (each a normal number down to k = -1076); k comes from
// the bits of x log2(e) + 1.5 * 2^52 (rounded to nearest; no conversion a NaN would make undefined).
inline double exp_nonpositive(double x) {
    const double shifter = 0x1.8p52;
    const double xc = x < -746.0 ? -746.0 : x;
    const double t = xc * 0x1.71547652b82fep0 + shifter;
    const double k = t - shifter;
    double r = xc - k * 0x1.62e42fefa3800p-1;
    r = r - k * 0x1.ef35793c76730p-45;
    double s = 1.0 / 6227020800.0;
    s = s * r + 1.0 / 479001600.0;
    s = s * r + 1.0 / 39916800.0;
    s = s * r + 1.0 / 3628800.0;
    s = s * r + 1.0 / 362880.0;
    s = s * r + 1.0 / 40320.0;
    s = s * r + 1.0 / 5040.0;
    s = s * r + 1.0 / 720.0;
    s = s * r + 1.0 / 120.0;
    s = s * r + 1.0 / 24.0;
    s = s * r + 1.0 / 6.0;
    s = s * r + 0.5;
    s = s * r + 1.0;
    s = s * r + 1.0;
    uint64_t tb;
    std::memcpy(&tb, &t, sizeof tb);
    // k + 2048 >= 0 here: halve it unsigned, 2^k = 2^k1 * 2^k2 with k1 = floor(k / 2), k2 = k - k1
    const uint64_t k_biased = tb - 0x4338000000000000ULL + 2048;
    const uint64_t k1_biased = (k_biased >> 1) - 1024 + 1023, k2_biased = k_biased - (k_biased >> 1) - 1024 + 1023;
    const uint64_t bits1 = k1_biased << 52, bits2 = k2_biased << 52;
    double scale1, scale2;
    std::memcpy(&scale1, &bits1, sizeof scale1);
    std::memcpy(&scale2, &bits2, sizeof scale2);
    const double v = (s * scale1) * scale2;
    return x < -746.0 ? 0.0 : v;
}

// Lanes of independent sums and maxima: the loops over a row are vectorized as written, with no
// reassociation the compiler would need -ffast-math for, so every build sums in the same order.
constexpr int kLanes = 16;

MATHNEURO_KL_CLONES RowResult kl_row(const float * p, const float * q, int64_t n) {
    const int64_t body = n / kLanes * kLanes;
    // pass 1: maxima (a NaN never wins a comparison, as in a scan) and the top tokens (the first of
    // equal maxima, as klOfLogRows picks it)
    float mpl[kLanes], mql[kLanes];
    for (int j = 0; j < kLanes; ++j) { mpl[j] = p[0]; mql[j] = q[0]; }
    for (int64_t i = 0; i < body; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) {
            const float a = p[i + j], b = q[i + j];
            mpl[j] = a > mpl[j] ? a : mpl[j];
            mql[j] = b > mql[j] ? b : mql[j];
        }
    }
    float fp = mpl[0], fq = mql[0];
    for (int j = 1; j < kLanes; ++j) { if (mpl[j] > fp) fp = mpl[j]; if (mql[j] > fq) fq = mql[j]; }
    for (int64_t i = body; i < n; ++i) { if (p[i] > fp) fp = p[i]; if (q[i] > fq) fq = q[i]; }
    int64_t top_p = 0, top_q = 0;
    if (!std::isnan(fp)) while (p[top_p] != fp) ++top_p;
    if (!std::isnan(fq)) while (q[top_q] != fq) ++top_q;
    const double mp = fp, mq = fq;
    // pass 2: the three sums; a token p gives no mass adds nothing to Sp and Sd
    const double ninf = -std::numeric_limits<double>::infinity();
    double spl[kLanes] = {}, sql[kLanes] = {}, sdl[kLanes] = {};
    for (int64_t i = 0; i < body; i += kLanes) {
        double ep[kLanes], eq[kLanes], d[kLanes];
        for (int j = 0; j < kLanes; ++j) eq[j] = exp_nonpositive((double) q[i + j] - mq);
        for (int j = 0; j < kLanes; ++j) ep[j] = exp_nonpositive((double) p[i + j] - mp);
        for (int j = 0; j < kLanes; ++j) {
            const double pi = p[i + j];
            const bool none = pi == ninf;
            d[j] = none ? 0.0 : pi - (double) q[i + j];
            ep[j] = none ? 0.0 : ep[j];
        }
        for (int j = 0; j < kLanes; ++j) { sql[j] += eq[j]; spl[j] += ep[j]; sdl[j] += ep[j] * d[j]; }
    }
    double sp = 0, sq = 0, sd = 0;
    for (int j = 0; j < kLanes; ++j) { sp += spl[j]; sq += sql[j]; sd += sdl[j]; }
    for (int64_t i = body; i < n; ++i) {
        const double pi = p[i], qi = q[i];
        sq += exp_nonpositive(qi - mq);
        if (pi == ninf) continue;
        const double e = exp_nonpositive(pi - mp);
        sp += e;
        sd += e * (pi - qi);
    }
    const double kl = sd / sp - ((mp + std::log(sp)) - (mq + std::log(sq)));
    // rounding can leave a tiny negative value where the rows agree (KL >= 0), as in klOfLogRows
    return { std::isnan(kl) ? kl : std::max(0.0, kl), top_p == top_q };
}

// klRows(p: Float32Array, q: Float32Array, nVocab: number, threads = 1): Promise<{ kl: Float64Array, sameTop: Uint8Array }>
// p and q are rows of nVocab logits (the same count of rows); they must not change until the promise settles.
Napi::Value KlRows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * usage = "klRows(p: Float32Array, q: Float32Array, nVocab: number, threads?: number)";
    if (info.Length() < 3 || !info[2].IsNumber()) throw CodedError("EUSAGE", usage);
    Napi::Float32Array p = RequireTypedArray<float>(info[0], "p");
    Napi::Float32Array q = RequireTypedArray<float>(info[1], "q");
    const double nv = info[2].As<Napi::Number>().DoubleValue();
    if (!(nv >= 1) || nv != std::floor(nv) || nv > 2147483647.0) throw CodedError("EUSAGE", "klRows(): nVocab must be a positive integer");
    const int64_t n_vocab = (int64_t) nv;
    if (p.ElementLength() != q.ElementLength()) throw CodedError("EUSAGE", "klRows(): p and q hold different numbers of logits");
    if (p.ElementLength() % (size_t) n_vocab != 0) throw CodedError("EUSAGE", "klRows(): the logits are not whole rows of nVocab");
    int threads = 1;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
        if (!info[3].IsNumber()) throw CodedError("EUSAGE", usage);
        const double t = info[3].As<Napi::Number>().DoubleValue();
        if (!(t >= 1 && t <= 256) || t != std::floor(t)) throw CodedError("EUSAGE", "klRows(): threads must be an integer in [1, 256]");
        threads = (int) t;
    }
    const int64_t n_rows = (int64_t) (p.ElementLength() / (size_t) n_vocab);
    const float * pd = p.Data();
    const float * qd = q.Data();
    auto kl = std::make_shared<std::vector<double>>(n_rows);
    auto same = std::make_shared<std::vector<uint8_t>>(n_rows);
    auto * w = new TaskWorker(env, [=]() {
        auto run = [&](int64_t from, int64_t to) {
            for (int64_t r = from; r < to; ++r) {
                const RowResult x = kl_row(pd + r * n_vocab, qd + r * n_vocab, n_vocab);
                (*kl)[r] = x.kl;
                (*same)[r] = x.same_top ? 1 : 0;
            }
        };
        const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(threads, n_rows));
        std::vector<std::thread> pool;
        for (int64_t t = 1; t < nt; ++t) pool.emplace_back(run, n_rows * t / nt, n_rows * (t + 1) / nt);
        run(0, n_rows / nt);
        for (auto & th : pool) th.join();
    }, [=](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("kl", ToJsArray<Napi::Float64Array>(e, *kl));
        o.Set("sameTop", ToJsArray<Napi::Uint8Array>(e, *same));
        return o;
    });
    w->Keep(p);
    w->Keep(q);
    return w->Start();
}

} // namespace

void RegisterDivergence(Napi::Env env, Napi::Object exports) {
    exports.Set("klRows", Napi::Function::New(env, Export<KlRows>));
}
