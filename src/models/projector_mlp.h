// LLaVA projector: linear_2(act(linear_1(x))) (LLaVA-1.5's 2-layer MLP), or linear_1 alone (LLaVA v1's linear).
// Inference forward and the training forward/backward pair.
#pragma once
#include "models/parts.h"
#include "models/weights.h"
#include "ops/activations.h"

namespace iris::models {

// What the projector keeps for its backward (n rows).
struct ProjectorActs : PartActs {
  int64_t n = 0;
  std::vector<float> x;  // (n, vision_dim) input
  std::vector<float> h;  // (n, text_dim) linear_1 output before the activation (linear_2's input is recomputed)
};

class MlpProjector : public Connector {
 public:
  // prefix: "multi_modal_projector."; a checkpoint without linear_2 is the linear projector.
  void load(WeightLoader& w, const std::string& prefix, int64_t vision_dim, int64_t text_dim, const std::string& act,
            bool bias);
  bool is_linear() const { return !l2_.w.defined(); }
  // x (n, vision_dim) -> (n, text_dim)
  Tensor forward(const float* x, int64_t n) const;

  // Training: the same, keeping the activations in a.
  Tensor forward_train(const float* x, int64_t n, ProjectorActs& a) const;
  // dy (n, text_dim) -> dx (n, vision_dim) (nullptr: not needed); accumulates the gradients of what trains.
  void backward(const ProjectorActs& a, const float* dy, float* dx) const;
  // The Connector interface: every feature row becomes one token (grid 1 x 1 x n).
  ImageFeatures forward(const Tensor& features, const ImagePixels& px) const override;
  ImageFeatures forward_train(const Tensor& features, const ImagePixels& px,
                              std::unique_ptr<PartActs>& acts) const override;
  void backward(PartActs& acts, const float* dy, float* dfeat) const override;
  bool trains() const override { return l1_.trains() || l2_.trains(); }

 private:
  std::string prefix_;
  nn::Linear l1_, l2_;
  ops::Activation act_ = ops::Activation::Gelu;
};

}  // namespace iris::models
