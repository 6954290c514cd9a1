// Shared by the tensor codec's files (codec.cpp, keep_scale.cpp, top_k.cpp, requantize.cpp): ggml
// type traits, keep-scale codes and the thread split. No policy: the caller decides K, the scale
// and what to write.
#pragma once
#include "common.h"
#include "ggml.h"

#include <algorithm>
#include <cstdint>
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
// Keep-scale codes (keep_scale.cpp): a weight of these formats is a * q + b with an integer code q
// in [qmin, qmax] and (a, b) fixed by the block's scales.

struct CodeSlot { float a; float b; int qmin; int qmax; int q; };
bool keep_scale_supported(ggml_type t);
CodeSlot read_slot(ggml_type t, const uint8_t * block, int p);   // weight p (0 <= p < block size)
void write_code(ggml_type t, uint8_t * block, int p, int q);
int rescale_sub_block_size(ggml_type t);   // 0: the type has no sub-block scales to raise
bool rescale_sub_block(ggml_type t, uint8_t * block, int sub, const float * tg);   // tg: the sub-block's targets
bool rescale_block(ggml_type t, uint8_t * block, const float * tg);   // tg: the block's targets

// ---------------------------------------------------------------------------------------------
// Threads

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

}  // namespace codec
