// Llama decoder (LlamaForCausalLM): token embeddings, decoder blocks with RoPE and a KV cache, final RMSNorm,
// LM head (tied to the embeddings when the config says so).
#pragma once
#include "models/config.h"
#include "models/weights.h"
#include "nn/blocks.h"

namespace iris::models {

class Llama {
 public:
  // body: prefix of "embed_tokens", "layers.N", "norm" (e.g. "model." or "language_model.model.");
  // head: name of the LM head weight (e.g. "lm_head.weight").
  void load(WeightLoader& w, const std::string& body, const std::string& head, const LlamaConfig& cfg);

  const LlamaConfig& config() const { return cfg_; }
  int64_t hidden_size() const { return cfg_.hidden_size; }
  int64_t vocab_size() const { return cfg_.vocab_size; }
  nn::KVCache make_cache(int64_t max_tokens) const;

  // out (n, D) = embeddings of ids; an id outside [0, vocab) is an error naming it.
  void embed(const int32_t* ids, int64_t n, float* out) const;
  // Runs x (T, D) through the decoder at positions [cache.size(), cache.size()+T), appending keys and values to
  // the cache; x becomes the final-normed hidden states. Writes logits (T, V) when all_logits, else (1, V) for the
  // last row; none when logits is null. The tap sees "layer_out" per layer and "output_norm".
  void forward(float* x, int64_t T, nn::KVCache& cache, float* logits, bool all_logits,
               const nn::Tap& tap = nullptr) const;
  // One token for each of n sequences with their own caches (continuous batching): x (n, D) embeddings, row i
  // appended to caches[i]; logits (n, V).
  void decode_batch(float* x, int64_t n, nn::KVCache* const* caches, float* logits) const;

 private:
  LlamaConfig cfg_;
  Tensor embed_;  // (V, D) as stored
  std::vector<nn::DecoderBlock> layers_;
  nn::RMSNorm norm_;
  nn::Linear head_;  // (V, D)
  std::vector<float> inv_freq_;
};

}  // namespace iris::models
