// Optimizers for training on fp32 master weights: SGD (optional momentum) and AdamW with PyTorch's exact
// semantics (torch.optim.SGD / torch.optim.AdamW, single-tensor path, including the order of roundings),
// global gradient-norm clipping as torch.nn.utils.clip_grad_norm_, and the gradient-accumulation helpers.
// Hyperparameters and learning rates are doubles, as Python floats are in PyTorch, so that the scalars the
// element loops use (1 - lr*wd, lr / (1 - beta1^t), ...) are rounded to float exactly as PyTorch rounds them.
// The element loops are vectorised and threaded over all parameters together with cpu::parallel_for; every
// element's result is independent of the thread count.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "tensor/tensor.h"

namespace iris::train {

// One trained tensor: fp32 values and their gradient (same number of elements), both contiguous.
// grad == nullptr means "no gradient this step": the optimizer skips the tensor entirely, as PyTorch skips a
// parameter whose .grad is None (its state and step count do not advance).
struct ParamRef {
  std::string name;
  float* value = nullptr;
  float* grad = nullptr;
  int64_t numel = 0;
  bool decay = true;  // weight decay applies (unless OptimizerConfig::decay_all puts it on everything)
  // >= 0: this tensor's own learning rate for the step, in place of step()'s (a parameter group with its own
  // base rate, as PyTorch's param_groups: the caller schedules each group's rate itself).
  double lr = -1;
};

// The default of the `decay` flag: no weight decay on biases, norm weights and other 0/1-dim tensors (the
// parameter groups of Hugging Face's Trainer and of the LLaVA recipes).
bool default_weight_decay(const std::string& name, const Shape& shape);

struct OptimizerConfig {
  std::string kind = "adamw";  // "adamw" or "sgd"
  double lr = 1e-3;            // base learning rate (the schedule scales it); step() takes the actual one
  double momentum = 0;         // SGD only; 0 = plain SGD (dampening 0, no Nesterov)
  double weight_decay = 0;     // AdamW: decoupled (w *= 1 - lr*wd); SGD: added to the gradient (g += wd*w)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
  bool decay_all = false;  // weight decay on every tensor, ignoring ParamRef::decay (--decay-all)
};

// The optimizer settings of a run configuration (TrainerConfig, ClipConfig: fields of the same names).
template <typename RunConfig>
OptimizerConfig optimizer_config_of(const RunConfig& c) {
  OptimizerConfig oc;
  oc.kind = c.optimizer;
  oc.lr = c.lr;
  oc.momentum = c.momentum;
  oc.weight_decay = c.weight_decay;
  oc.beta1 = c.beta1;
  oc.beta2 = c.beta2;
  oc.eps = c.eps;
  oc.decay_all = c.decay_all;
  return oc;
}

class Optimizer {
 public:
  // Validates the configuration (kind, ranges of lr, betas, eps, momentum, weight decay).
  static std::unique_ptr<Optimizer> create(const OptimizerConfig& cfg);
  virtual ~Optimizer() = default;

  // One update of every parameter with a gradient, with this step's learning rate (from the schedule), or the
  // parameter's own ParamRef::lr where that is set.
  // Parameter names must be unique; a parameter's state is kept by name and must keep its size.
  virtual void step(const std::vector<ParamRef>& params, double lr) = 0;

  // The state by name: "exp_avg.<param>", "exp_avg_sq.<param>" (AdamW), "momentum_buffer.<param>" (SGD with
  // momentum, once the parameter has had a step) as f32 tensors of the parameter's size, and "step" (I64,
  // shape (1), the number of step() calls). A parameter whose own step count differs from "step" (it was
  // skipped on some steps) also gets "step.<param>". The tensors share memory with the live state: save or
  // clone them before the next step().
  virtual io::NamedTensors state() const = 0;
  // Replaces the state with a copy of `s` (for example a checkpoint's optimizer.safetensors). Errors name the
  // missing or mismatched tensor: no "step", an exp_avg without its exp_avg_sq, a tensor this kind of
  // optimizer does not keep, a wrong dtype.
  virtual void load_state(const io::NamedTensors& s) = 0;
  // After load_state, when resuming: every parameter must have state of its size (AdamW: exp_avg and
  // exp_avg_sq; SGD with momentum: momentum_buffer once steps() > 0). Throws naming the first missing or
  // mismatched tensor. Nothing to check before the first step.
  virtual void check_state(const std::vector<ParamRef>& params) const = 0;

  const OptimizerConfig& config() const { return cfg_; }
  int64_t steps() const { return steps_; }  // step() calls so far (restored by load_state)

 protected:
  explicit Optimizer(const OptimizerConfig& cfg) : cfg_(cfg) {}
  OptimizerConfig cfg_;
  int64_t steps_ = 0;
};

// torch.nn.utils.clip_grad_norm_ (norm_type 2): total = sqrt(sum of g^2 over every gradient), accumulated in
// double; coef = max_norm / (total + 1e-6), computed in float as PyTorch does; the gradients are multiplied
// by coef only when coef < 1. Returns the total norm before clipping (inf or nan when a gradient is).
// max_norm <= 0 only measures. Parameters without a gradient are ignored.
double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm);
// The total gradient norm without clipping.
double grad_norm(const std::vector<ParamRef>& params);

// Gradient accumulation: the caller sums gradients over micro-batches (each backward adds into grad), then
// calls scale_grads(params, 1.0 / micro_batches) to get the mean before clipping and the step.
void scale_grads(const std::vector<ParamRef>& params, float factor);
void zero_grads(const std::vector<ParamRef>& params);

}  // namespace iris::train
