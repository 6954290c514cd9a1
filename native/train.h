// What training (train.cpp) and the evaluation of its models (train_eval.cpp) share: checked GGUF
// loading into writable CPU weights and a context for them.
#pragma once
#include "common.h"
#include "llama-cpp.h"

#include <string>

// Checks a GGUF before llama.cpp sees it: readable, and (for training) every tensor F32.
bool CheckGguf(const std::string & path, bool require_f32, std::string & error);

// A model with writable weights on the CPU, for training and for evaluating the fixture.
llama_model_ptr LoadWritableModel(const std::string & path, bool require_f32, std::string & error);

struct ContextOptions {
    uint32_t n_ctx = 0;
    uint32_t n_batch = 0;
    uint32_t n_seq = 1;
    int threads = 1;
    ggml_backend_sched_eval_callback cb_eval = nullptr;
    void * cb_eval_user_data = nullptr;
};

// A context that can train: no flash attention, F32 K/V.
llama_context_ptr NewContext(llama_model * model, const ContextOptions & o, std::string & error);
