// Small llama.cpp helpers shared by the collector's model (model.cpp) and the fixture's evaluation
// (train_eval.cpp).
#pragma once
#include "llama.h"

#include <algorithm>
#include <string>
#include <vector>

inline std::vector<llama_token> Tokenize(const llama_vocab * vocab, const std::string & text, bool add_special) {
    int32_t n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, add_special, false);
    std::vector<llama_token> out(std::max<int32_t>(n, 0));
    if (n > 0) {
        int32_t got = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), n, add_special, false);
        if (got < 0) out.clear(); else out.resize(got);
    }
    return out;
}

// Fill `batch` with tokens[pos, pos + n) of one sequence (id 0) at their own positions; the logits
// of every token when `logits_all`, else of the sequence's last token only.
inline void FillSequenceBatch(llama_batch & batch, const std::vector<llama_token> & tokens, size_t pos, int32_t n, bool logits_all) {
    batch.n_tokens = n;
    for (int32_t i = 0; i < n; ++i) {
        batch.token[i] = tokens[pos + i];
        batch.pos[i] = (llama_pos) (pos + i);
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = logits_all || pos + i + 1 == tokens.size();
    }
}
