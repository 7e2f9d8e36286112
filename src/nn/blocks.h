// Transformer blocks: the pre-LN ViT block (CLIP) and the Llama decoder block (RMSNorm, RoPE, GQA, SwiGLU).
// Each has an inference forward and a training pair: forward_train fills an activations struct with exactly
// what backward needs, and backward runs the block in reverse from it (llm.c's layer pairs). Training sequences
// are whole: positions 0..T-1, no KV cache.
#pragma once
#include <string>
#include <vector>

#include "nn/kv_cache.h"
#include "nn/layers.h"
#include "ops/activations.h"
#include "ops/rope.h"

namespace iris::nn {

// Scratch buffers reused across blocks of one forward pass (grown on demand).
struct Scratch {
  std::vector<float> a, b, c, d, e, f;
  static float* get(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

// An activation buffer kept for the backward, resized to n floats.
inline float* sized(std::vector<float>& v, int64_t n) {
  v.resize(size_t(n));
  return v.data();
}

// What a ViT block keeps for its backward (T rows; D = hidden, I = MLP, H = heads).
struct ViTBlockActs {
  std::vector<float> x;             // (T, D) block input (layer_norm1's input)
  std::vector<float> mean1, rstd1;  // (T)
  std::vector<float> xn1;           // (T, D) layer_norm1 output: the input of q, k, v
  std::vector<float> q, k, v;       // (T, D)
  std::vector<float> att, lse;      // (T, D) attention output (out_proj's input), (H, T)
  std::vector<float> h1;            // (T, D) after the attention residual (layer_norm2's input)
  std::vector<float> mean2, rstd2;  // (T)
  std::vector<float> xn2;           // (T, D) layer_norm2 output: fc1's input
  std::vector<float> f1;            // (T, I) fc1 output before the activation (fc2's input is recomputed)
};

// What a decoder block keeps for its backward (qd = H*hd, kvd = KV*hd).
struct DecoderBlockActs {
  std::vector<float> x;      // (T, D) block input
  std::vector<float> rstd1;  // (T)
  std::vector<float> xn1;    // (T, D) input_layernorm output
  std::vector<float> q;      // (T, qd) after RoPE
  std::vector<float> k, v;   // (T, kvd), k after RoPE
  std::vector<float> att;    // (T, qd) attention output (o_proj's input)
  std::vector<float> lse;    // (H, T)
  std::vector<float> h1;     // (T, D) after the attention residual
  std::vector<float> rstd2;  // (T)
  std::vector<float> xn2;    // (T, D) post_attention_layernorm output
  std::vector<float> g, u;   // (T, I) gate and up outputs (down's input silu(g) * u is recomputed)
};

// CLIP encoder layer: h += attn(ln1(h)); h += mlp(ln2(h)). Bidirectional attention, biased projections.
struct ViTBlock {
  LayerNorm ln1, ln2;
  Linear q, k, v, o;   // (D, D) each
  Linear fc1, fc2;     // (I, D), (D, I)
  ops::Activation act = ops::Activation::QuickGelu;
  int n_head = 1;

  // h (T, D) in place. n_keys > 0: every token attends to the first n_keys tokens only (the rest are padding that
  // is computed but never looked at: Idefics3's padded tiles, real patches first).
  void forward(float* h, int64_t T, Scratch& s, const Tap& tap = nullptr, int il = 0, int64_t n_keys = 0) const;

  // Training: h (T, D) in place, keeping what backward needs in a.
  void forward_train(float* h, int64_t T, ViTBlockActs& a) const;
  // dh (T, D): the gradient of the block output in, of its input out. Accumulates the parameter gradients.
  void backward(const ViTBlockActs& a, int64_t T, float* dh, Scratch& s) const;
  bool trains() const;
};

// Llama decoder layer with a KV cache: h += attn(rmsnorm(h)); h += mlp(rmsnorm(h)).
struct DecoderBlock {
  RMSNorm attn_norm, mlp_norm;
  Linear q, k, v, o;          // (H*hd, D), (KV*hd, D), (KV*hd, D), (D, H*hd)
  Linear gate, up, down;      // (I, D), (I, D), (D, I)
  int n_head = 1, n_kv_head = 1, head_dim = 1;
  int64_t window = 0;  // sliding-window attention: a token sees the last `window` cache slots (0: all)

  // h (T, D) rotated by rope (T rows: the tokens' rotary angles, which the caller derives from their positions);
  // the cache holds slots [0, slot0) and receives [slot0, slot0+T). Slots are cache rows, not rotary positions
  // (M-RoPE positions do not count cache rows).
  void forward(float* h, int64_t T, const ops::RopeTable& rope, int64_t slot0, KVCache& cache, int il, Scratch& s,
               const Tap& tap = nullptr) const;
  // One new token for each of n sequences, each with its own cache (continuous batching): h (n, D); row i is
  // rotated by rope row i and its key/value go to caches[i] at slot caches[i]->size(). The matrix products run
  // once for all rows.
  void forward_batch(float* h, int64_t n, const ops::RopeTable& rope, KVCache* const* caches, int il,
                     Scratch& s) const;

  // Training over a whole causal sequence (rope: its T rows): h (T, D) in place.
  void forward_train(float* h, int64_t T, const ops::RopeTable& rope, DecoderBlockActs& a) const;
  // dh (T, D): gradient of the output in, of the input out. Accumulates the parameter gradients.
  void backward(const DecoderBlockActs& a, int64_t T, const ops::RopeTable& rope, float* dh, Scratch& s) const;
  bool trains() const;
};

}  // namespace iris::nn
