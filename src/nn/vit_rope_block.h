// The vision block of Qwen2-VL and Qwen2.5-VL: pre-norm (LayerNorm, or RMSNorm in 2.5), fused qkv with 2-D
// rotary embeddings on q and k, attention restricted to segments of the sequence (each image, or each window,
// attends only to itself), out projection, then a plain MLP fc2(act(fc1)) (2-VL) or a gated one
// down(silu(gate) * up) (2.5). Inference forward, and the training pair (forward_train keeps what backward needs).
#pragma once
#include <string>
#include <vector>

#include "nn/blocks.h"

namespace iris::nn {

// Segment boundaries: cu[0] = 0 < cu[1] < ... < cu.back() = T; rows [cu[i], cu[i+1]) attend to each other only.
using Segments = std::vector<int64_t>;

struct RopeViTBlockActs {
  std::vector<float> x;             // (T, D) block input
  std::vector<float> mean1, rstd1;  // (T)
  std::vector<float> xn1;           // (T, D) norm1 output (qkv's input)
  std::vector<float> qkv;           // (T, 3D) q, k (rotated), v
  std::vector<float> att, lse;      // (T, D) attention output (proj's input); (H, T) per segment, segment-major
  std::vector<float> h1;            // (T, D) after the attention residual
  std::vector<float> mean2, rstd2;  // (T)
  std::vector<float> xn2;           // (T, D) norm2 output
  std::vector<float> f1, f2;        // plain: (T, I) fc1 output; gated: gate and up outputs (T, I) each
};

struct RopeViTBlock {
  bool rms_norm = false;   // RMSNorm (no bias) instead of LayerNorm
  LayerNorm ln1, ln2;
  RMSNorm rn1, rn2;
  Linear qkv, proj;        // (3D, D), (D, D)
  bool gated = false;
  Linear fc1, fc2;         // plain MLP: (I, D), (D, I)
  Linear gate, up, down;   // gated MLP: (I, D), (I, D), (D, I)
  ops::Activation act = ops::Activation::QuickGelu;
  int n_head = 1;

  int64_t dim() const { return proj.out_features(); }
  int64_t mlp_dim() const { return gated ? gate.out_features() : fc1.out_features(); }
  // h (T, D) in place; rope: T rows of (head_dim / 2) angles.
  void forward(float* h, int64_t T, const ops::RopeTable& rope, const Segments& seg, Scratch& s,
               const Tap& tap = nullptr, int il = 0) const;
  void forward_train(float* h, int64_t T, const ops::RopeTable& rope, const Segments& seg, RopeViTBlockActs& a) const;
  // dh (T, D): the gradient of the output in, of the input out. Accumulates the parameter gradients.
  void backward(const RopeViTBlockActs& a, int64_t T, const ops::RopeTable& rope, const Segments& seg, float* dh,
                Scratch& s) const;
  bool trains() const;
};

}  // namespace iris::nn
