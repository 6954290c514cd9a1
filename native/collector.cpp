// The MathNeuro statistics collector: a llama.cpp eval callback that sees the input of every
// weight matmul during forward passes (as tools/imatrix does) and accumulates, per input column,
// the per-sample L2 norms (norm_sum) and the sums of squares (sum2, the imatrix quantity).
#include "collector.h"
#include "ggml-backend.h"

#include <algorithm>
#include <chrono>

#include <cmath>
#include <cstring>

// remove backend prefixes and copy suffixes: CUDA0#blk.0.attn_k.weight#0 => blk.0.attn_k.weight
static std::string filter_tensor_name(const char * name) {
    const char * p = strchr(name, '#');
    if (p == nullptr) return name;
    p++;
    const char * q = strchr(p, '#');
    return q ? std::string(p, q - p) : std::string(p);
}

Stats & Collector::stats_for(const std::string & name, int64_t n_in, int64_t n_mat) {
    auto it = stats.find(name);
    if (it != stats.end()) return it->second;
    Stats & s = stats[name];
    s.n_in = n_in;
    s.n_mat = n_mat;
    s.sum2.assign(n_in * n_mat, 0.0);
    s.norm_sum.assign(n_in * n_mat, 0.0);
    s.counts.assign(n_mat, 0.0);
    s.sample_sq.assign(n_in * n_mat, 0.0);
    s.pending_norm.assign(n_in * n_mat, 0.0);
    s.touched.assign(n_mat, 0);
    return s;
}

// pointer to row data as float (converted when src1 is F16/BF16)
const float * Collector::row_as_f32(const ggml_tensor * src1, const char * row) {
    if (src1->type == GGML_TYPE_F32) return (const float *) row;
    const auto * traits = ggml_get_type_traits(src1->type);
    row_f32.resize(src1->ne[0]);
    traits->to_float(row, row_f32.data(), src1->ne[0]);
    return row_f32.data();
}

bool Collector::accept(const ggml_tensor * t) {
    if (!enabled) return false;
    if (t->op != GGML_OP_MUL_MAT && t->op != GGML_OP_MUL_MAT_ID) return false;
    const bool ok = accept_matmul(t);
    if (record_matmuls && t->src[0]) {
        auto & e = matmuls_seen[filter_tensor_name(t->src[0]->name)];
        e.first = (int) t->op;
        e.second = e.second || ok;
    }
    return ok;
}

bool Collector::accept_matmul(const ggml_tensor * t) {
    const ggml_tensor * src0 = t->src[0];
    const ggml_tensor * src1 = t->src[1];
    if (!src0 || !src1) return false;
    if (src1->type != GGML_TYPE_F32 && src1->type != GGML_TYPE_F16 && src1->type != GGML_TYPE_BF16) return false;
    auto it = weights.find(filter_tensor_name(src0->name));
    if (it == weights.end()) return false;   // KQ, LoRA and other non-weight matmuls
    if (src1->ne[0] != it->second.n_in || src0->ne[0] != it->second.n_in) return false;
    if (t->op == GGML_OP_MUL_MAT_ID && src0->ne[2] != it->second.n_mat) return false;
    return true;
}

bool Collector::observe(ggml_tensor * t) {
    const ggml_tensor * src0 = t->src[0];
    const ggml_tensor * src1 = t->src[1];
    const std::string name = filter_tensor_name(src0->name);

    const bool is_host = src1->buffer == nullptr || ggml_backend_buffer_is_host(src1->buffer);
    const char * data = (const char *) src1->data;
    if (!is_host) {
        host_copy.resize(ggml_nbytes(src1));
        ggml_backend_tensor_get(src1, host_copy.data(), 0, ggml_nbytes(src1));
        data = host_copy.data();
    }
    if (src1->nb[0] != ggml_type_size(src1->type)) {
        error = "non-contiguous matmul input for " + name;
        return false;
    }
    const int64_t ne0 = src1->ne[0];

    if (!segments.empty()) return observe_packed(t, name, data);

    if (t->op == GGML_OP_MUL_MAT_ID) {
        // ids: [n_expert_used, n_tokens]; src1: [ne0, n_expert_used or 1, n_tokens]
        const ggml_tensor * ids = t->src[2];
        const int64_t n_as = src0->ne[2];
        if (ggml_nrows(src1) != src1->ne[1] * src1->ne[2] || ids->ne[1] != src1->ne[2]) {
            error = "unexpected MUL_MAT_ID layout for " + name;
            return false;
        }
        ids_copy.resize(ggml_nbytes(ids));
        ggml_backend_tensor_get(ids, ids_copy.data(), 0, ggml_nbytes(ids));
        Stats & s = stats_for(name, ne0, n_as);
        const int64_t n_ids = ids->ne[0];
        const int64_t n_tokens = src1->ne[2];
        for (int64_t token = 0; token < n_tokens; ++token) {
            for (int64_t slot = 0; slot < n_ids; ++slot) {
                const int32_t ex = *(const int32_t *) (ids_copy.data() + token * ids->nb[1] + slot * ids->nb[0]);
                if (ex < 0 || ex >= n_as) {
                    error = "expert id out of range for " + name;
                    return false;
                }
                const int64_t i11 = slot % src1->ne[1];
                const float * x = row_as_f32(src1, data + i11 * src1->nb[1] + token * src1->nb[2]);
                double * acc = s.sample_sq.data() + ex * ne0;
                for (int64_t j = 0; j < ne0; ++j) acc[j] += (double) x[j] * (double) x[j];
                s.counts[ex] += 1;
                s.touched[ex] = 1;
            }
        }
        s.any_touched = true;
        return true;
    }

    // dense: one input row per token (flattened over ne[2], ne[3] when the weight is 2D)
    // a 3D dense weight keeps one set of columns per matrix, as imatrix does
    const int64_t n_mat = src0->ne[2] * src0->ne[3];
    Stats & s = stats_for(name, ne0, n_mat);
    if (n_mat == 1) {
        // weights that read the same input (q/k/v, gate/up) reuse one pass over it
        if (!(col_sq_key == (const void *) src1 && col_sq_data == src1->data && col_sq_generation == generation && is_host)) {
            col_sq.assign(ne0, 0.0);
            for (int64_t i3 = 0; i3 < src1->ne[3]; ++i3)
            for (int64_t i2 = 0; i2 < src1->ne[2]; ++i2)
            for (int64_t row = 0; row < src1->ne[1]; ++row) {
                const float * x = row_as_f32(src1, data + row * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3]);
                double * acc = col_sq.data();
                for (int64_t j = 0; j < ne0; ++j) acc[j] += (double) x[j] * (double) x[j];
            }
            col_sq_key = src1;
            col_sq_data = src1->data;
            col_sq_generation = generation;
        }
        double * acc = s.sample_sq.data();
        for (int64_t j = 0; j < ne0; ++j) acc[j] += col_sq[j];
        s.counts[0] += (double) ggml_nrows(src1);
        s.touched[0] = 1;
    } else {
        for (int64_t i3 = 0; i3 < src1->ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < src1->ne[2]; ++i2) {
            const int64_t mat_id = (i3 % src0->ne[3]) * src0->ne[2] + (i2 % src0->ne[2]);
            double * acc = s.sample_sq.data() + mat_id * ne0;
            for (int64_t row = 0; row < src1->ne[1]; ++row) {
                const float * x = row_as_f32(src1, data + row * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3]);
                for (int64_t j = 0; j < ne0; ++j) acc[j] += (double) x[j] * (double) x[j];
            }
            s.counts[mat_id] += (double) src1->ne[1];
            s.touched[mat_id] = 1;
        }
    }
    s.any_touched = true;
    return true;
}

// Packed samples: every sample is whole inside this decode, so its norms are final here.
bool Collector::observe_packed(ggml_tensor * t, const std::string & name, const char * data) {
    const ggml_tensor * src0 = t->src[0];
    const ggml_tensor * src1 = t->src[1];
    const int64_t ne0 = src1->ne[0];
    const size_t n_seg = segments.size();
    if (t->op == GGML_OP_MUL_MAT_ID) {
        const ggml_tensor * ids = t->src[2];
        const int64_t n_as = src0->ne[2];
        const int64_t n_tokens = src1->ne[2];
        if (n_tokens != packed_rows || ggml_nrows(src1) != src1->ne[1] * src1->ne[2] || ids->ne[1] != n_tokens) {
            error = "packed batch: unexpected MUL_MAT_ID layout for " + name + " (disable packing)";
            return false;
        }
        ids_copy.resize(ggml_nbytes(ids));
        ggml_backend_tensor_get(ids, ids_copy.data(), 0, ggml_nbytes(ids));
        Stats & s = stats_for(name, ne0, n_as);
        s.any_touched = true;
        const int64_t n_ids = ids->ne[0];
        seg_sq.assign(n_as * ne0, 0.0);
        std::vector<uint8_t> hit(n_as);
        for (size_t g = 0; g < n_seg; ++g) {
            std::fill(seg_sq.begin(), seg_sq.end(), 0.0);
            std::fill(hit.begin(), hit.end(), 0);
            for (int64_t token = segments[g].first; token < segments[g].first + segments[g].second; ++token) {
                for (int64_t slot = 0; slot < n_ids; ++slot) {
                    const int32_t ex = *(const int32_t *) (ids_copy.data() + token * ids->nb[1] + slot * ids->nb[0]);
                    if (ex < 0 || ex >= n_as) { error = "expert id out of range for " + name; return false; }
                    const float * x = row_as_f32(src1, data + (slot % src1->ne[1]) * src1->nb[1] + token * src1->nb[2]);
                    double * acc = seg_sq.data() + ex * ne0;
                    for (int64_t j = 0; j < ne0; ++j) acc[j] += (double) x[j] * (double) x[j];
                    s.counts[ex] += 1;
                    hit[ex] = 1;
                }
            }
            for (int64_t ex = 0; ex < n_as; ++ex) {
                if (!hit[ex]) continue;
                for (int64_t j = 0; j < ne0; ++j) {
                    const double sq = seg_sq[ex * ne0 + j];
                    s.sample_sq[ex * ne0 + j] += sq;
                    s.pending_norm[ex * ne0 + j] += std::sqrt(sq);
                }
                s.touched[ex] = 1;
            }
        }
        return true;
    }
    if (src0->ne[2] > 1 && src0->ne[3] == 1 && src1->ne[1] == packed_rows && src1->ne[2] == src0->ne[2] && src1->ne[3] == 1) {
        // a 3D dense weight, one matrix per ne[2] slice (MLA's per-head attn_k_b / attn_v_b): rows are tokens
        const int64_t n_mat = src0->ne[2];
        Stats & s = stats_for(name, ne0, n_mat);
        seg_sq.assign(ne0, 0.0);
        for (int64_t m = 0; m < n_mat; ++m) {
            for (size_t g = 0; g < n_seg; ++g) {
                std::fill(seg_sq.begin(), seg_sq.end(), 0.0);
                for (int64_t row = segments[g].first; row < segments[g].first + segments[g].second; ++row) {
                    const float * x = row_as_f32(src1, data + row * src1->nb[1] + m * src1->nb[2]);
                    for (int64_t j = 0; j < ne0; ++j) seg_sq[j] += (double) x[j] * (double) x[j];
                }
                for (int64_t j = 0; j < ne0; ++j) {
                    s.sample_sq[m * ne0 + j] += seg_sq[j];
                    s.pending_norm[m * ne0 + j] += std::sqrt(seg_sq[j]);
                }
                s.counts[m] += (double) segments[g].second;
            }
            s.touched[m] = 1;
        }
        s.any_touched = true;
        return true;
    }
    if (src0->ne[2] * src0->ne[3] != 1 || ggml_nrows(src1) != packed_rows || src1->ne[1] != packed_rows) {
        error = "packed batch: unexpected matmul layout for " + name + " (disable packing)";
        return false;
    }
    Stats & s = stats_for(name, ne0, 1);
    // q/k/v and gate/up read the same input: one pass over it serves them all
    if (!(col_sq_key == (const void *) src1 && col_sq_data == src1->data && col_sq_generation == generation && src1->buffer && ggml_backend_buffer_is_host(src1->buffer))) {
        col_sq.assign(n_seg * ne0, 0.0);
        for (size_t g = 0; g < n_seg; ++g) {
            double * acc = col_sq.data() + g * ne0;
            for (int64_t row = segments[g].first; row < segments[g].first + segments[g].second; ++row) {
                const float * x = row_as_f32(src1, data + row * src1->nb[1]);
                for (int64_t j = 0; j < ne0; ++j) acc[j] += (double) x[j] * (double) x[j];
            }
        }
        col_sq_key = src1;
        col_sq_data = src1->data;
        col_sq_generation = generation;
    }
    for (size_t g = 0; g < n_seg; ++g) {
        const double * sq = col_sq.data() + g * ne0;
        for (int64_t j = 0; j < ne0; ++j) {
            s.sample_sq[j] += sq[j];
            s.pending_norm[j] += std::sqrt(sq[j]);
        }
        s.counts[0] += (double) segments[g].second;
    }
    s.touched[0] = 1;
    s.any_touched = true;
    return true;
}

// end of a sample: fold its per-column sums of squares into norm_sum (as an L2 norm) and sum2
void Collector::end_sample() {
    for (auto & kv : stats) {
        Stats & s = kv.second;
        if (!s.any_touched) continue;
        for (int64_t m = 0; m < s.n_mat; ++m) {
            if (!s.touched[m]) continue;
            const int64_t base = m * s.n_in;
            for (int64_t j = 0; j < s.n_in; ++j) {
                const double sq = s.sample_sq[base + j];
                s.sum2[base + j] += sq;
                s.norm_sum[base + j] += std::sqrt(sq);
                s.sample_sq[base + j] = 0.0;
            }
            s.touched[m] = 0;
        }
        s.any_touched = false;
    }
}

// packed decode succeeded: its samples' sums and norms are final
void Collector::end_packed() {
    for (auto & kv : stats) {
        Stats & s = kv.second;
        if (!s.any_touched) continue;
        for (size_t i = 0; i < s.sum2.size(); ++i) {
            s.sum2[i] += s.sample_sq[i];
            s.norm_sum[i] += s.pending_norm[i];
            s.sample_sq[i] = 0.0;
            s.pending_norm[i] = 0.0;
        }
        std::fill(s.touched.begin(), s.touched.end(), 0);
        s.any_touched = false;
    }
}

// drop a partially observed sample (cancellation or a decode error)
void Collector::discard_sample() {
    for (auto & kv : stats) {
        Stats & s = kv.second;
        std::fill(s.pending_norm.begin(), s.pending_norm.end(), 0.0);
        std::fill(s.sample_sq.begin(), s.sample_sq.end(), 0.0);
        std::fill(s.touched.begin(), s.touched.end(), 0);
        s.any_touched = false;
    }
}

// counts are added as tokens are seen; a discarded sample must not keep them
void Collector::snapshot_counts(std::unordered_map<std::string, std::vector<double>> & out) {
    out.clear();
    for (auto & kv : stats) out[kv.first] = kv.second.counts;
}
void Collector::restore_counts(const std::unordered_map<std::string, std::vector<double>> & saved) {
    for (auto & kv : stats) {
        auto it = saved.find(kv.first);
        if (it != saved.end()) kv.second.counts = it->second;
        else std::fill(kv.second.counts.begin(), kv.second.counts.end(), 0.0);
    }
}

bool CollectorEvalCallback(ggml_tensor * t, bool ask, void * user_data) {
    auto * c = (Collector *) user_data;
    // after the stop node every node is "needed", so a later split (another backend) computes one node
    // and breaks on the answer below instead of running to its end
    if (c->stopped) return ask;
    const bool stop_node = !c->stop_after.empty() && c->stop_after == t->name;
    if (ask) return stop_node || c->accept(t);
    if (stop_node) {
        c->stopped = true;
        c->stops++;
        return false;
    }
    if (!c->error.empty()) return false;
    const auto t0 = std::chrono::steady_clock::now();
    const bool ok = c->observe(t);
    c->observe_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return ok;
}

bool CollectorAbortCallback(void * user_data) {
    auto * c = (Collector *) user_data;
    return c->abort_flag && c->abort_flag->load();
}
