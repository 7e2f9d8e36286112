// Qwen2-VL's patch merger (PatchMerger; Qwen2.5-VL's with an RMSNorm): ln_q on every patch row, each m x m
// block's rows (consecutive in pixel_values order) concatenated, then mlp.2(gelu(mlp.0(x))): one token per block.
// Weight names: "<prefix>ln_q.{weight, bias}", "<prefix>mlp.0.{weight, bias}", "<prefix>mlp.2.{weight, bias}".
#pragma once
#include "models/config.h"
#include "models/parts.h"
#include "models/weights.h"

namespace iris::models {

class PatchMerger : public Connector {
 public:
  void load(WeightLoader& w, const std::string& prefix, const Qwen2VLVisionConfig& cfg);
  ImageFeatures forward(const Tensor& features, const ImagePixels& px) const override;
  ImageFeatures forward_train(const Tensor& features, const ImagePixels& px,
                              std::unique_ptr<PartActs>& acts) const override;
  void backward(PartActs& acts, const float* dy, float* dfeat) const override;
  bool trains() const override;

 private:
  ImageFeatures run(const Tensor& features, const ImagePixels& px, struct MergerActs* a) const;
  std::string prefix_;
  int64_t unit_ = 4;  // rows per token: spatial_merge_size^2
  int64_t merge_ = 2;
  bool rms_ = false;
  nn::LayerNorm ln_;
  nn::RMSNorm rn_;
  nn::Linear fc1_, fc2_;  // (unit*D, unit*D), (out, unit*D)
};

}  // namespace iris::models
