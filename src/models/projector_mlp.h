// LLaVA projector: linear_2(act(linear_1(x))) (LLaVA-1.5's 2-layer MLP), or linear_1 alone (LLaVA v1's linear).
#pragma once
#include "models/weights.h"
#include "ops/activations.h"

namespace iris::models {

class MlpProjector {
 public:
  // prefix: "multi_modal_projector."; a checkpoint without linear_2 is the linear projector.
  void load(WeightLoader& w, const std::string& prefix, int64_t vision_dim, int64_t text_dim, const std::string& act,
            bool bias);
  bool is_linear() const { return !l2_.w.defined(); }
  // x (n, vision_dim) -> (n, text_dim)
  Tensor forward(const float* x, int64_t n) const;

 private:
  nn::Linear l1_, l2_;
  ops::Activation act_ = ops::Activation::Gelu;
};

}  // namespace iris::models
