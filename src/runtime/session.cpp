// Generation session over the KV cache.
#include "runtime/session.h"

namespace iris::runtime {

Session::Session(const models::Vlm& model, int64_t n_ctx) : model_(model), cache_(model.text().make_cache(n_ctx)) {}

std::vector<float> Session::prefill(const Tensor& emb, bool all_logits, const nn::Tap& tap) {
  const int64_t T = emb.dim(0), D = model_.text().hidden_size(), V = model_.text().vocab_size();
  IRIS_CHECK(emb.ndim() == 2 && emb.dim(1) == D, "prefill: embeddings ", shape_str(emb.shape()), " for hidden size ", D);
  IRIS_CHECK(T > 0, "prefill: empty prompt");
  IRIS_CHECK(n_past() + T <= n_ctx(), "the prompt needs ", n_past() + T, " positions but the context holds ", n_ctx(),
             " (raise it with -c / --ctx-size)");
  Tensor x = emb.clone();
  std::vector<float> logits(size_t(all_logits ? T * V : V));
  model_.text().forward(x.data<float>(), T, cache_, logits.data(), all_logits, tap ? tap : models::env_dump_tap("text"));
  return logits;
}

std::vector<float> Session::decode(int32_t token) {
  const int64_t D = model_.text().hidden_size(), V = model_.text().vocab_size();
  IRIS_CHECK(n_past() + 1 <= n_ctx(), "the context is full (", n_ctx(), " positions; raise it with -c / --ctx-size)");
  std::vector<float> x(static_cast<size_t>(D)), logits(static_cast<size_t>(V));
  model_.text().embed(&token, 1, x.data());
  model_.text().forward(x.data(), 1, cache_, logits.data(), false);
  return logits;
}

std::vector<float> Session::decode_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens) {
  IRIS_CHECK(sessions.size() == tokens.size() && !sessions.empty(), "decode_batch: ", sessions.size(), " sessions, ",
             tokens.size(), " tokens");
  const models::Llama& lm = sessions[0]->model_.text();
  const int64_t n = int64_t(sessions.size()), D = lm.hidden_size(), V = lm.vocab_size();
  std::vector<float> x(static_cast<size_t>(n * D)), logits(static_cast<size_t>(n * V));
  std::vector<nn::KVCache*> caches;
  for (int64_t i = 0; i < n; ++i) {
    IRIS_CHECK(&sessions[size_t(i)]->model_ == &sessions[0]->model_, "decode_batch: sessions of different models");
    lm.embed(&tokens[size_t(i)], 1, x.data() + i * D);
    caches.push_back(&sessions[size_t(i)]->cache_);
  }
  lm.decode_batch(x.data(), n, caches.data(), logits.data());
  return logits;
}

}  // namespace iris::runtime
