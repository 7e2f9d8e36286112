// SigLIP vision tower (SiglipVisionTransformer, and Idefics3 / SmolVLM's Idefics3VisionTransformer): patch
// convolution with bias as a matrix product, no class token, learned position embeddings, pre-LN encoder layers
// (gelu_pytorch_tanh MLP), post_layernorm. Frames may be smaller than the position table or partly padding
// (Idefics3's pixel_attention_mask): the real patches then take Idefics3's bucketed position ids, and padding
// patches are computed but never attended to, exactly as Hugging Face does.
#pragma once
#include <cstdint>
#include <vector>

#include "models/config.h"
#include "models/parts.h"
#include "models/weights.h"
#include "nn/blocks.h"

namespace iris::models {

// Idefics3's position bucketing: the position-table row (0 .. nps-1) of each of nb real patches along one side,
// as Hugging Face computes it (torch.bucketize of float32 torch.arange fractions against float32 boundaries,
// right=True), including torch's float32 arange rounding on an AVX2 CPU build. For nb == nps this is the identity
// except for a few nps (19, 25, 29, ...), where HF's rounding shifts one patch.
std::vector<int64_t> idefics3_position_buckets(int64_t nb, int64_t nps);

class SiglipVision {
 public:
  void load(WeightLoader& w, const std::string& prefix, const SiglipVisionConfig& cfg, bool with_post_layernorm = true);
  const SiglipVisionConfig& config() const { return cfg_; }

  // One frame (C, H, W), normalised; H and W multiples of the patch size. pixel_mask (H, W), nonzero = real pixel,
  // or nullptr (all real). A patch is real when any of its pixels is; the real patches must form the top-left
  // rectangle of the patch grid (padding at the bottom / right). Returns (H/p * W/p, D) in row-major patch order,
  // after post_layernorm when it was loaded. The tap sees "embeddings" (il = -1) and "layer_out" (real patches
  // first, then padding).
  Tensor forward(const float* pixels, int64_t C, int64_t H, int64_t W, const uint8_t* pixel_mask,
                 const nn::Tap& tap = nullptr) const;

 private:
  SiglipVisionConfig cfg_;
  nn::Linear patch_;  // (D, C*p*p) with bias
  Tensor pos_emb_;    // (num_positions, D)
  float* grad_pos_emb_ = nullptr;
  nn::LayerNorm post_ln_;
  std::vector<nn::ViTBlock> layers_;
};

}  // namespace iris::models
