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
#include <algorithm>
#include <cstdint>
#include <memory>
#include <limits>
#include <thread>
#include <vector>

namespace {

struct RowResult { double kl; bool same_top; };

RowResult kl_row(const float * p, const float * q, int64_t n) {
    // pass 1: maxima and top tokens (the first of equal maxima, as klOfLogRows picks it)
    int64_t top_p = 0, top_q = 0;
    for (int64_t i = 1; i < n; ++i) {
        if (p[i] > p[top_p]) top_p = i;
        if (q[i] > q[top_q]) top_q = i;
    }
    const double mp = p[top_p], mq = q[top_q];
    // pass 2: the three sums
    double sp = 0, sq = 0, sd = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double pi = p[i], qi = q[i];
        sq += std::exp(qi - mq);
        if (pi == -std::numeric_limits<double>::infinity()) continue;
        const double e = std::exp(pi - mp);
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
