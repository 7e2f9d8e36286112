// Generation session over the KV cache.
#include "runtime/session.h"

namespace iris::runtime {

Session::Session(const models::Vlm& model, int64_t n_ctx) : model_(model), cache_(model.text().make_cache(n_ctx)) {}

std::vector<float> Session::prefill(const models::PromptInput& p, bool all_logits, const nn::Tap& tap) {
  const Tensor& emb = p.embeddings;
  const int64_t T = emb.dim(0), D = model_.text().hidden_size(), V = model_.text().vocab_size();
  IRIS_CHECK(emb.ndim() == 2 && emb.dim(1) == D, "prefill: embeddings ", shape_str(emb.shape()), " for hidden size ", D);
  IRIS_CHECK(T > 0, "prefill: empty prompt");
  IRIS_CHECK(n_past() + T <= n_ctx(), "the prompt needs ", n_past() + T, " positions but the context holds ", n_ctx(),
             " (raise it with -c / --ctx-size)");
  Tensor x = emb.clone();
  std::vector<float> logits(size_t(all_logits ? T * V : V));
  model_.text().forward(x.data<float>(), T, p.positions, cache_, logits.data(), all_logits,
                        tap ? tap : models::env_dump_tap("text"));
  next_pos_ = p.next_position;
  return logits;
}

std::vector<float> Session::decode(int32_t token) {
  const int64_t D = model_.text().hidden_size(), V = model_.text().vocab_size();
  IRIS_CHECK(n_past() + 1 <= n_ctx(), "the context is full (", n_ctx(), " positions; raise it with -c / --ctx-size)");
  std::vector<float> x(static_cast<size_t>(D)), logits(static_cast<size_t>(V));
  model_.text().embed(&token, 1, x.data());
  const models::Positions pos = models::Positions::range(next_pos_, 1, model_.text().position_streams());
  model_.text().forward(x.data(), 1, pos, cache_, logits.data(), false);
  ++next_pos_;
  return logits;
}

std::vector<float> Session::decode_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens) {
  IRIS_CHECK(sessions.size() == tokens.size() && !sessions.empty(), "decode_batch: ", sessions.size(), " sessions, ",
             tokens.size(), " tokens");
  const models::Llama& lm = sessions[0]->model_.text();
  const int64_t n = int64_t(sessions.size()), D = lm.hidden_size(), V = lm.vocab_size();
  std::vector<float> x(static_cast<size_t>(n * D)), logits(static_cast<size_t>(n * V));
  std::vector<nn::KVCache*> caches;
  std::vector<int64_t> pos;
  for (int64_t i = 0; i < n; ++i) {
    IRIS_CHECK(&sessions[size_t(i)]->model_ == &sessions[0]->model_, "decode_batch: sessions of different models");
    lm.embed(&tokens[size_t(i)], 1, x.data() + i * D);
    caches.push_back(&sessions[size_t(i)]->cache_);
    pos.push_back(sessions[size_t(i)]->next_pos_);
  }
  lm.decode_batch(x.data(), n, pos.data(), caches.data(), logits.data());
  for (Session* s : sessions) ++s->next_pos_;
  return logits;
}

}  // namespace iris::runtime
