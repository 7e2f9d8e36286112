// Transformer blocks: the pre-LN ViT block (CLIP) and the Llama decoder block (RMSNorm, RoPE, GQA, SwiGLU).
#pragma once
#include <vector>

#include "nn/kv_cache.h"
#include "nn/layers.h"
#include "ops/activations.h"

namespace iris::nn {

// Scratch buffers reused across blocks of one forward pass (grown on demand).
struct Scratch {
  std::vector<float> a, b, c, d, e;
  static float* get(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

// CLIP encoder layer: h += attn(ln1(h)); h += mlp(ln2(h)). Bidirectional attention, biased projections.
struct ViTBlock {
  LayerNorm ln1, ln2;
  Linear q, k, v, o;   // (D, D) each
  Linear fc1, fc2;     // (I, D), (D, I)
  ops::Activation act = ops::Activation::QuickGelu;
  int n_head = 1;

  void forward(float* h, int64_t T, Scratch& s, const Tap& tap = nullptr, int il = 0) const;  // h (T, D) in place
};

// Llama decoder layer with a KV cache: h += attn(rmsnorm(h)); h += mlp(rmsnorm(h)).
struct DecoderBlock {
  RMSNorm attn_norm, mlp_norm;
  Linear q, k, v, o;          // (H*hd, D), (KV*hd, D), (KV*hd, D), (D, H*hd)
  Linear gate, up, down;      // (I, D), (I, D), (D, I)
  int n_head = 1, n_kv_head = 1, head_dim = 1;

  // h (T, D) at positions pos[0..T); the cache holds positions [0, pos0) and receives [pos0, pos0+T).
  void forward(float* h, int64_t T, const int64_t* pos, int64_t pos0, const float* inv_freq, KVCache& cache, int il,
               Scratch& s, const Tap& tap = nullptr) const;
  // One new token for each of n sequences, each with its own cache (continuous batching): h (n, D); row i sits at
  // position pos[i] and its key/value go to caches[i] at that position. The matrix products run once for all rows.
  void forward_batch(float* h, int64_t n, const int64_t* pos, const float* inv_freq, KVCache* const* caches, int il,
                     Scratch& s) const;
};

}  // namespace iris::nn
