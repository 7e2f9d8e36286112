// CLIP vision tower (CLIPVisionTransformer): patch convolution as a matrix product, class token, learned
// position embeddings, pre_layrnorm, pre-LN encoder layers, post_layernorm.
#pragma once
#include "models/config.h"
#include "models/weights.h"
#include "nn/blocks.h"

namespace iris::models {

class ClipVision {
 public:
  // prefix: e.g. "vision_tower.vision_model."; loads the first n_layers encoder layers (-1: all) and, when
  // with_post_layernorm, the final norm (LLaVA never uses it).
  void load(WeightLoader& w, const std::string& prefix, const ClipVisionConfig& cfg, int n_layers, bool with_post_layernorm);

  const ClipVisionConfig& config() const { return cfg_; }
  int loaded_layers() const { return int(layers_.size()); }
  int64_t tokens() const { return cfg_.num_positions(); }

  // pixels (C, H, W), normalised, H = W = image_size. Runs the embeddings and the first n_layers encoder layers
  // and returns the residual stream (tokens, D): class token first, then the patches row by row.
  // The tap sees "embeddings" (after pre_layrnorm, il = -1) and "layer_out" for each layer.
  Tensor forward(const float* pixels, int64_t C, int64_t H, int64_t W, int n_layers, const nn::Tap& tap = nullptr) const;
  // post_layernorm of rows (rows, D).
  Tensor post_layernorm(const Tensor& x) const;

 private:
  ClipVisionConfig cfg_;
  nn::Linear patch_;        // (D, C*p*p), no bias
  Tensor class_emb_;        // (D,)
  Tensor pos_emb_;          // (num_positions, D)
  nn::LayerNorm pre_ln_, post_ln_;
  std::vector<nn::ViTBlock> layers_;
};

}  // namespace iris::models
