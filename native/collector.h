// The statistics collector (collector.cpp): the llama.cpp eval callback that sees the input of every
// weight matmul and accumulates, per input column, sum2 and the per-sample L2 norms. The model,
// its context and the N-API class that drive it are in model.cpp.
#pragma once
#include "ggml.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

struct WeightShape {
    int64_t n_in = 0;      // ne[0] of the weight: the width of the matmul input
    int64_t n_mat = 1;     // experts (ne[2]) for MoE weights, 1 for dense
};

// Statistics of one weight, accumulated in float64.
struct Stats {
    int64_t n_in = 0;
    int64_t n_mat = 1;
    std::vector<double> sum2;       // sum over tokens of x_j^2, per (matrix, column)
    std::vector<double> norm_sum;   // sum over samples of sqrt(sum over the sample's tokens of x_j^2)
    std::vector<double> counts;     // tokens seen, per matrix (expert)
    std::vector<double> sample_sq;  // this sample's sum of squares, folded in at the end of the sample
    std::vector<double> pending_norm;  // packed mode: norms of this decode's samples, committed after it succeeds
    std::vector<uint8_t> touched;   // which matrices this sample reached
    bool any_touched = false;
};

struct Collector {
    std::unordered_map<std::string, WeightShape> weights;   // every tensor of the GGUF with its input width
    std::unordered_map<std::string, Stats> stats;
    std::vector<char> host_copy;    // src1 copied from a non-host buffer
    std::vector<char> ids_copy;
    std::vector<float> row_f32;     // one converted row when src1 is not F32
    std::vector<double> col_sq;     // per-column sums of squares of the current src1, reused across weights sharing it
    const void * col_sq_key = nullptr;
    const void * col_sq_data = nullptr;
    uint64_t col_sq_generation = 0;
    uint64_t generation = 0;        // bumped before every llama_decode
    bool enabled = true;            // false: plain forward passes (the benchmark floor), nothing accepted
    // Early stop: end each graph evaluation right after the node with this name (empty: never). The
    // scheduler breaks out of a split when the callback answers false after a node it asked for; every
    // later split then computes only its first node. Nodes after it (the output head) are not computed,
    // so the logits llama_decode copies out are garbage: the caller must not read them.
    std::string stop_after;
    bool stopped = false;           // this decode reached stop_after; reset before every llama_decode
    int64_t stops = 0;              // decodes that stopped early, for the caller to check
    double observe_ms = 0;          // time spent in observe() (the statistics themselves), this collection
    // Packed mode: several whole samples in one llama_decode as separate sequences; row r of every
    // matmul input belongs to the segment that holds r (the unified KV cache keeps batch order).
    std::vector<std::pair<int64_t, int64_t>> segments;   // (first row, rows) per sample
    int64_t packed_rows = 0;
    std::vector<double> seg_sq;     // per-segment column sums of squares
    std::atomic<bool> * abort_flag = nullptr;
    std::string error;              // first error seen inside the callback (aborts the graph)
    // optional record of every MUL_MAT / MUL_MAT_ID the scheduler asked about: src0's name (backend
    // prefix stripped) -> (op, accepted). No policy here: the caller decides what the names mean.
    bool record_matmuls = false;
    std::unordered_map<std::string, std::pair<int, bool>> matmuls_seen;

    Stats & stats_for(const std::string & name, int64_t n_in, int64_t n_mat);
    // pointer to row data as float (converted when src1 is F16/BF16)
    const float * row_as_f32(const ggml_tensor * src1, const char * row);
    bool accept(const ggml_tensor * t);
    bool accept_matmul(const ggml_tensor * t);
    bool observe(ggml_tensor * t);
    // Packed samples: every sample is whole inside this decode, so its norms are final here.
    bool observe_packed(ggml_tensor * t, const std::string & name, const char * data);
    // end of a sample: fold its per-column sums of squares into norm_sum (as an L2 norm) and sum2
    void end_sample();
    // packed decode succeeded: its samples' sums and norms are final
    void end_packed();
    // drop a partially observed sample (cancellation or a decode error)
    void discard_sample();
    // counts are added as tokens are seen; a discarded sample must not keep them
    void snapshot_counts(std::unordered_map<std::string, std::vector<double>> & out);
    void restore_counts(const std::unordered_map<std::string, std::vector<double>> & saved);
};

// The scheduler's callbacks (user data: the Collector): cb_eval and the abort callback.
bool CollectorEvalCallback(ggml_tensor * t, bool ask, void * user_data);
bool CollectorAbortCallback(void * user_data);
