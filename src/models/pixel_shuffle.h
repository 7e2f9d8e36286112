// Idefics3 / SmolVLM's connector (Idefics3Connector): pixel shuffle of each frame's square patch grid by
// scale_factor s (token (i, j) of the (g/s) x (g/s) grid = the s x s patches (i*s + a, j*s + b) concatenated,
// a the outer index), then modality_projection.proj (E*s*s -> text width, no bias).
#pragma once
#include "models/weights.h"
#include "nn/layers.h"

namespace iris::models {

// (n_frames * g * g, E) rows, frame after frame, each frame's patches row-major -> (n_frames * (g/s)^2, E*s*s).
Tensor pixel_shuffle(const Tensor& features, int64_t n_frames, int64_t scale);

class PixelShuffleProjector {
 public:
  // prefix: "model.connector."
  void load(WeightLoader& w, const std::string& prefix, int64_t vision_dim, int64_t scale, int64_t text_dim);
  int64_t scale() const { return scale_; }
  int64_t text_dim() const { return proj_.out_features(); }
  // features (n_frames * g * g, vision_dim) -> (n_frames * (g/s)^2, text_dim).
  Tensor forward(const Tensor& features, int64_t n_frames) const;

 private:
  int64_t scale_ = 1;
  nn::Linear proj_;
};

}  // namespace iris::models
