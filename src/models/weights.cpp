// Shape-checked weight loading and creation.
#include "models/weights.h"

#include <algorithm>
#include <cmath>

namespace iris::models {

Tensor WeightLoader::raw(const std::string& name, const Shape& shape, Init init) {
  if (creating()) {
    IRIS_CHECK(!created_index_.count(name), "weight '", name, "' created twice");
    Tensor t = Tensor::empty(shape);
    float* d = t.data<float>();
    if (init == Init::Ones) {
      std::fill_n(d, t.numel(), 1.0f);
    } else if (init == Init::Normal) {
      // Box-Muller over the raw 64-bit generator: the same numbers on every platform for a seed.
      auto uniform = [&] { return (double(rng_() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };
      for (int64_t i = 0; i < t.numel(); i += 2) {
        double r = std::sqrt(-2.0 * std::log(uniform())), a = 2.0 * M_PI * uniform();
        d[i] = float(std_ * r * std::cos(a));
        if (i + 1 < t.numel()) d[i + 1] = float(std_ * r * std::sin(a));
      }
    }
    created_.emplace_back(name, t);
    created_index_.insert(name);
    return t;
  }
  IRIS_CHECK(ckpt_->has(name), "missing tensor '", name, "' (expected shape ", shape_str(shape), ")");
  Tensor t = ckpt_->get(name);
  IRIS_CHECK(t.shape() == shape, "tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ",
             shape_str(shape));
  DType d = t.dtype();
  IRIS_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F16, "tensor '", name, "' has dtype ", dtype_name(d),
             ", expected F32, BF16 or F16");
  used_.insert(name);
  return t;
}

Tensor WeightLoader::f32(const std::string& name, const Shape& shape, Init init) {
  return raw(name, shape, init).to(DType::F32);
}

void WeightLoader::linear(nn::Linear& dst, const std::string& prefix, int64_t out, int64_t in, bool bias) {
  dst.w = cpu::LinearWeight(raw(prefix + ".weight", {out, in}), precision_);
  dst.b = bias ? f32(prefix + ".bias", {out}, Init::Zeros) : Tensor();
  nn::Linear* l = &dst;
  record([prefix, l](std::vector<nn::ParamSlot>& o) { nn::linear_slots(prefix, *l, o); });
  if (!component_.empty()) record_.linears.push_back({prefix, component_, l});
}

void WeightLoader::layernorm(nn::LayerNorm& dst, const std::string& prefix, int64_t dim, float eps) {
  dst.w = f32(prefix + ".weight", {dim}, Init::Ones);
  dst.b = f32(prefix + ".bias", {dim}, Init::Zeros);
  dst.eps = eps;
  nn::LayerNorm* n = &dst;
  record([prefix, n](std::vector<nn::ParamSlot>& o) { nn::layernorm_slots(prefix, *n, o); });
}

void WeightLoader::rmsnorm(nn::RMSNorm& dst, const std::string& prefix, int64_t dim, float eps) {
  dst.w = f32(prefix + ".weight", {dim}, Init::Ones);
  dst.eps = eps;
  nn::RMSNorm* n = &dst;
  record([prefix, n](std::vector<nn::ParamSlot>& o) { nn::rmsnorm_slots(prefix, *n, o); });
}

std::vector<nn::ParamSlot> SlotRecord::param_slots(const std::string& component) const {
  std::vector<nn::ParamSlot> out;
  for (const Param& p : params)
    if (component == "*" || (p.component == component && !component.empty())) p.make(out);
  return out;
}

std::vector<nn::LinearSlot> SlotRecord::linear_slots() const { return linears; }

std::vector<std::string> WeightLoader::unused(const std::string& prefix) const {
  std::vector<std::string> r;
  if (!ckpt_) return r;
  for (const auto& n : ckpt_->names())
    if (n.compare(0, prefix.size(), prefix) == 0 && !used_.count(n) &&
        std::none_of(skipped_.begin(), skipped_.end(), [&](const std::string& s) { return n.rfind(s, 0) == 0; }))
      r.push_back(n);
  return r;
}

void load_vit_block(WeightLoader& w, nn::ViTBlock& b, const std::string& l, int64_t D, int64_t I, float eps,
                    ops::Activation act, int n_head) {
  w.layernorm(b.ln1, l + "layer_norm1", D, eps);
  w.layernorm(b.ln2, l + "layer_norm2", D, eps);
  w.linear(b.q, l + "self_attn.q_proj", D, D, true);
  w.linear(b.k, l + "self_attn.k_proj", D, D, true);
  w.linear(b.v, l + "self_attn.v_proj", D, D, true);
  w.linear(b.o, l + "self_attn.out_proj", D, D, true);
  w.linear(b.fc1, l + "mlp.fc1", I, D, true);
  w.linear(b.fc2, l + "mlp.fc2", D, I, true);
  b.act = act;
  b.n_head = n_head;
}

}  // namespace iris::models
