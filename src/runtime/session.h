// A generation session: one sequence's KV cache over a loaded model. Prefill runs a prompt's embeddings,
// decode runs one token; both return the logits of the last position.
#pragma once
#include <vector>

#include "models/vlm.h"

namespace iris::runtime {

class Session {
 public:
  Session(const models::Vlm& model, int64_t n_ctx);

  int64_t n_ctx() const { return cache_.max_tokens(); }
  int64_t n_past() const { return cache_.size(); }
  void reset() { cache_.clear(); }
  // Truncates the cache to its first n positions (to reuse a shared prefix).
  void truncate(int64_t n) { cache_.set_size(n); }

  // emb (T, D) appended at positions [n_past, n_past+T). Returns logits (V) of the last position, or of every
  // position (T*V) when all_logits.
  std::vector<float> prefill(const Tensor& emb, bool all_logits = false, const nn::Tap& tap = nullptr);
  std::vector<float> decode(int32_t token);
  // One token for each session, batched through the matrix products: logits (n, V) row-major.
  static std::vector<float> decode_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens);

 private:
  const models::Vlm& model_;
  nn::KVCache cache_;
};

}  // namespace iris::runtime
