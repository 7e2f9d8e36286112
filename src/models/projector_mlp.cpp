// LLaVA projector: forward, training forward/backward, parameter slots.
#include "models/projector_mlp.h"

namespace iris::models {

void MlpProjector::load(WeightLoader& w, const std::string& prefix, int64_t vision_dim, int64_t text_dim,
                        const std::string& act, bool bias) {
  prefix_ = prefix;
  w.linear(l1_, prefix + "linear_1", text_dim, vision_dim, bias);
  // LLaVA-1.5 (and any created model) has the 2-layer MLP; a checkpoint without linear_2 is LLaVA v1's linear one.
  if (w.creating() || w.has(prefix + "linear_2.weight")) w.linear(l2_, prefix + "linear_2", text_dim, text_dim, bias);
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

Tensor MlpProjector::forward_train(const float* x, int64_t n, ProjectorActs& a) const {
  const int64_t dv = l1_.in_features(), dt = l1_.out_features();
  a.n = n;
  a.x.assign(x, x + n * dv);
  Tensor y = Tensor::empty({n, dt});
  l1_.forward_train(x, n, y.data<float>());
  if (is_linear()) return y;
  a.h.assign(y.data<float>(), y.data<float>() + n * dt);
  ops::activation_forward(act_, y.data<float>(), y.data<float>(), n * dt);
  Tensor z = Tensor::empty({n, dt});
  l2_.forward_train(y.data<float>(), n, z.data<float>());
  return z;
}

void MlpProjector::backward(const ProjectorActs& a, const float* dy, float* dx) const {
  const int64_t n = a.n, dt = l1_.out_features();
  if (is_linear()) {
    l1_.backward(a.x.data(), dy, n, dx);
    return;
  }
  std::vector<float> y(size_t(n * dt)), dh(size_t(n * dt));
  ops::activation_forward(act_, a.h.data(), y.data(), n * dt);  // linear_2's input, recomputed
  l2_.backward(y.data(), dy, n, dh.data());
  ops::activation_backward(act_, a.h.data(), dh.data(), dh.data(), n * dt);
  l1_.backward(a.x.data(), dh.data(), n, dx);
}

ImageFeatures MlpProjector::forward(const Tensor& features, const ImagePixels&) const {
  Tensor f = features.contiguous();
  IRIS_CHECK(f.ndim() == 2 && f.dim(1) == l1_.in_features(), "projector: features ", shape_str(f.shape()),
             " for an input width of ", l1_.in_features());
  ImageFeatures r;
  r.embeddings = forward(f.data<float>(), f.dim(0));
  r.grid_w = f.dim(0);
  return r;
}

ImageFeatures MlpProjector::forward_train(const Tensor& features, const ImagePixels&,
                                          std::unique_ptr<PartActs>& acts) const {
  Tensor f = features.contiguous();
  auto a = std::make_unique<ProjectorActs>();
  ImageFeatures r;
  r.embeddings = forward_train(f.data<float>(), f.dim(0), *a);
  r.grid_w = f.dim(0);
  acts = std::move(a);
  return r;
}

void MlpProjector::backward(PartActs& acts, const float* dy, float* dfeat) const {
  backward(static_cast<const ProjectorActs&>(acts), dy, dfeat);
}

}  // namespace iris::models
