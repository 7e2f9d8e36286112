// Llama decoder (LlamaForCausalLM): token embeddings, decoder blocks with RoPE and a KV cache, final RMSNorm,
// LM head (tied to the embeddings when the config says so). Inference forward with a KV cache, and the training
// forward/backward pair over a whole sequence (the backward is the layer loop in reverse; optional per-layer
// recomputation). The LM head and the loss are applied by the caller (train/), on the rows it needs.
#pragma once
#include "models/config.h"
#include "models/weights.h"
#include "nn/blocks.h"

namespace iris::models {

// Rotary positions of T tokens, given by the caller: n_streams rows of T (plain RoPE: 1 stream; M-RoPE: 3, the
// t, h, w positions of Qwen2-VL's get_rope_index). Text tokens have the same value in every stream.
struct Positions {
  int64_t n_streams = 1, T = 0;
  std::vector<int64_t> ids;  // (n_streams, T) row-major
  // start, start+1, ... in every stream.
  static Positions range(int64_t start, int64_t T, int64_t n_streams = 1);
  int64_t max() const;  // the largest position (-1 when empty)
};

// What the decoder keeps for its backward.
struct LlamaActs {
  int64_t T = 0;
  bool checkpointing = false;
  ops::RopeTable rope;                       // (T, head_dim/2) the rows' rotary angles
  std::vector<nn::DecoderBlockActs> layers;  // one per layer, or one reused when checkpointing
  std::vector<std::vector<float>> inputs;    // checkpointing: each layer's input (T, D)
  std::vector<float> pre_norm;               // (T, D) the final norm's input
  std::vector<float> rstd;                   // (T)
  std::vector<float> out;                    // (T, D) final-normed hidden states (the LM head's input)
};

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
  // Position streams the rotary embedding takes: 1, or 3 for M-RoPE.
  int64_t position_streams() const { return cfg_.mrope_section.empty() ? 1 : 3; }
  // Runs x (T, D) at the given rotary positions through the decoder, appending keys and values to the cache (at
  // its rows [cache.size(), cache.size()+T)); x becomes the final-normed hidden states. Writes logits (T, V) when
  // all_logits, else (1, V) for the last row; none when logits is null. The tap sees "layer_out" per layer and
  // "output_norm".
  void forward(float* x, int64_t T, const Positions& pos, nn::KVCache& cache, float* logits, bool all_logits,
               const nn::Tap& tap = nullptr) const;
  // One token for each of n sequences with their own caches (continuous batching): x (n, D) embeddings of text
  // tokens at rotary positions pos (n) (the same in every stream), row i appended to caches[i]; logits (n, V).
  void decode_batch(float* x, int64_t n, const int64_t* pos, nn::KVCache* const* caches, float* logits) const;

  const nn::Linear& head() const { return head_; }  // (V, D)
  bool tied() const { return tied_; }                // the head is the embedding table

  // Training forward over x (T, D) at the given positions, no cache; a.out gets the final-normed hidden states.
  void forward_train(const float* x, int64_t T, const Positions& pos, LlamaActs& a, bool checkpointing) const;
  // dout (T, D): gradient of a.out (destroyed). dx (T, D): gradient of x (nullptr: not needed, and the layers
  // below the lowest one that trains are skipped). Accumulates the gradients of what trains.
  void backward(LlamaActs& a, float* dout, float* dx) const;
  // The embedding table's gradient for rows dx (n, D) of tokens ids (n); no-op when the table is frozen.
  void embed_backward(const int32_t* ids, int64_t n, const float* dx) const;
  bool embed_trains() const { return grad_embed_ != nullptr; }
  bool trains() const;

 private:
  LlamaConfig cfg_;
  std::string body_, head_name_;  // weight-name prefix of the body, name of the head weight
  bool tied_ = false;
  float* grad_embed_ = nullptr;   // (V, D) when trained
  Tensor embed_;  // (V, D) as stored
  std::vector<nn::DecoderBlock> layers_;
  nn::RMSNorm norm_;
  nn::Linear head_;  // (V, D)
  std::vector<float> inv_freq_;
  std::vector<int> stream_of_;  // (head_dim/2) M-RoPE: the position stream of each frequency pair; empty: plain
  ops::RopeTable rope(const Positions& pos) const;
};

}  // namespace iris::models
