// Qwen2-VL's and Qwen2.5-VL's vision tower (Qwen2VisionTransformerPretrainedModel without its merger, which is the
// patch_merger connector): Conv3d patch embedding as a matrix product over pixel_values rows, 2-D rotary
// embeddings from each patch's row and column, rotary ViT blocks (nn/vit_rope_block.h). Qwen2-VL attends over the
// whole image (each temporal slice separately); Qwen2.5-VL attends inside windows of window_size pixels, reordered
// window by window as Hugging Face does, except at fullatt_block_indexes. The output is in pixel_values row order.
//
// Weight names (prefix "visual." or "model.visual."): patch_embed.proj.weight (D, C, tp, p, p);
// blocks.N.{norm1, norm2}.{weight, bias (LayerNorm only)}; blocks.N.attn.{qkv, proj}.{weight, bias};
// blocks.N.mlp.{fc1, fc2} (2-VL) or blocks.N.mlp.{gate_proj, up_proj, down_proj} (2.5), weight and bias.
#pragma once
#include "models/config.h"
#include "models/parts.h"
#include "models/weights.h"
#include "nn/vit_rope_block.h"

namespace iris::models {

// Where every row goes and which rows attend together, for one image.
struct Qwen2VitLayout {
  ops::RopeTable rope;            // (N, head_dim/2) in compute order
  nn::Segments full, window;      // full attention (per temporal slice) and window attention (2.5) segments
  std::vector<int64_t> order;     // compute row r holds pixel_values row order[r] (identity for 2-VL)
};

class Qwen2Vit : public VisionEncoder {
 public:
  void load(WeightLoader& w, const std::string& prefix, const Qwen2VLVisionConfig& cfg);
  const Qwen2VLVisionConfig& config() const { return cfg_; }
  int64_t out_dim() const override { return cfg_.embed_dim; }
  Tensor forward(const ImagePixels& px, const nn::Tap& tap = nullptr) const override;
  Tensor forward_train(const ImagePixels& px, std::unique_ptr<PartActs>& acts, bool checkpointing) const override;
  void backward(PartActs& acts, float* dfeat) const override;
  bool trains() const override;

  // The rotary angles, segments and window order of an image of grid (t, h, w) patches.
  Qwen2VitLayout layout(int64_t t, int64_t h, int64_t w) const;

 private:
  void check_pixels(const ImagePixels& px) const;
  const nn::Segments& segments(const Qwen2VitLayout& l, int il) const;

  Qwen2VLVisionConfig cfg_;
  std::string prefix_;
  nn::Linear patch_;  // (D, C*tp*p*p), no bias
  std::vector<nn::RopeViTBlock> blocks_;
  std::vector<float> inv_freq_;  // (head_dim/4) 1 / 10000^(2i / (head_dim/2))
};

}  // namespace iris::models
