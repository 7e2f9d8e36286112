// A generation session: one sequence's KV cache over a loaded model, and the rotary position of its next token
// (not the cache length: with M-RoPE an image's tokens take fewer positions than cache rows). Prefill runs a
// prompt's embeddings at the positions the model gave them, decode runs one token; both return the logits of
// the last position.
#pragma once
#include <vector>

#include "models/vlm.h"

namespace iris::runtime {

class Session {
 public:
  Session(const models::Vlm& model, int64_t n_ctx);

  int64_t n_ctx() const { return cache_.max_tokens(); }
  int64_t n_past() const { return cache_.size(); }
  int64_t next_position() const { return next_pos_; }
  void reset() {
    cache_.clear();
    next_pos_ = 0;
  }

  // The prompt's embeddings appended at cache rows [n_past, n_past+T) and rotary positions p.positions. Returns
  // logits (V) of the last position, or of every position (T*V) when all_logits.
  std::vector<float> prefill(const models::PromptInput& p, bool all_logits = false, const nn::Tap& tap = nullptr);
  std::vector<float> decode(int32_t token);
  // One token for each session, batched through the matrix products: logits (n, V) row-major.
  static std::vector<float> decode_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens);

 private:
  const models::Vlm& model_;
  nn::KVCache cache_;
  int64_t next_pos_ = 0;
};

}  // namespace iris::runtime
