// LLaVA projector forward.
#include "models/projector_mlp.h"

namespace iris::models {

void MlpProjector::load(WeightLoader& w, const std::string& prefix, int64_t vision_dim, int64_t text_dim,
                        const std::string& act, bool bias) {
  l1_ = w.linear(prefix + "linear_1", text_dim, vision_dim, bias);
  // LLaVA-1.5 (and any created model) has the 2-layer MLP; a checkpoint without linear_2 is LLaVA v1's linear one.
  if (w.creating() || w.has(prefix + "linear_2.weight")) l2_ = w.linear(prefix + "linear_2", text_dim, text_dim, bias);
  act_ = ops::activation_from_name(act);
}

Tensor MlpProjector::forward(const float* x, int64_t n) const {
  const int64_t dt = l1_.out_features();
  Tensor y = Tensor::empty({n, dt});
  l1_.forward(x, n, y.data<float>());
  if (is_linear()) return y;
  ops::activation_forward(act_, y.data<float>(), y.data<float>(), n * dt);
  Tensor z = Tensor::empty({n, dt});
  l2_.forward(y.data<float>(), n, z.data<float>());
  return z;
}

}  // namespace iris::models
