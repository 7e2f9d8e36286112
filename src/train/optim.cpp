// SGD and AdamW with PyTorch's arithmetic, gradient clipping and accumulation helpers (see optim.h).
//
// Bit-exactness with torch 1.13 on CPU (checked against scripts/ref_optim.py): PyTorch turns each
// Python-float scalar into a float once (1 - lr*wd, beta1, 1 - beta1, -step_size, ...), and its vectorised
// kernels compute add(a, b, alpha) as fma(b, alpha, a) and addcmul(s, t1, t2, value) as fma(value*t1, t2, s),
// while addcdiv is s + (value*t1)/t2 unfused. The loops below do the same operations in the same order.
#include "train/optim.h"

#include <immintrin.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <unordered_set>

#include "cpu/threads.h"

// GCC contracts a*b + c into an fma by default in C++ (-ffp-contract=fast), which would round differently
// from PyTorch's separate mul_ and add; every fma here is explicit.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace iris::train {

namespace {

constexpr int64_t kGrain = int64_t(1) << 15;  // elements per thread at least (the loops are memory-bound)
constexpr int64_t kNormBlock = int64_t(1)
                               << 16;  // fixed reduction blocks: the norm does not depend on threads

bool contains_ci(const std::string& s, const char* needle) {
  std::string lower(s);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return lower.find(needle) != std::string::npos;
}

// Parameters with gradients laid end to end: [offsets[i], offsets[i+1]) is params[idx[i]] in a flat index
// space that parallel_for splits evenly, so many small tensors and one huge one both spread over the threads.
struct FlatSpace {
  std::vector<size_t> idx;
  std::vector<int64_t> offsets{0};

  explicit FlatSpace(const std::vector<ParamRef>& params) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad || params[i].numel <= 0) continue;
      idx.push_back(i);
      offsets.push_back(offsets.back() + params[i].numel);
    }
  }
  int64_t total() const { return offsets.back(); }
  // Calls fn(k, begin, end) for each piece of tensor idx[k] inside the flat range [b, e), local indices.
  template <typename F>
  void for_pieces(int64_t b, int64_t e, F&& fn) const {
    size_t k = size_t(std::upper_bound(offsets.begin(), offsets.end(), b) - offsets.begin()) - 1;
    for (; k < idx.size() && offsets[k] < e; ++k) {
      int64_t lo = std::max(b, offsets[k]) - offsets[k], hi = std::min(e, offsets[k + 1]) - offsets[k];
      if (lo < hi) fn(k, lo, hi);
    }
  }
};

void check_params(const std::vector<ParamRef>& params, const char* what) {
  std::unordered_set<std::string> seen;
  for (const ParamRef& p : params) {
    IRIS_CHECK(p.numel >= 0, what, ": parameter '", p.name, "' has a negative size ", p.numel);
    IRIS_CHECK(p.value || p.numel == 0, what, ": parameter '", p.name, "' has no values");
    IRIS_CHECK(seen.insert(p.name).second, what, ": parameter name '", p.name, "' appears twice");
    IRIS_CHECK(std::isfinite(p.lr), what, ": parameter '", p.name, "' has a non-finite learning rate");
  }
}

// The learning rate a parameter steps with: its own (a parameter group's) when set, else the step's.
double param_lr(const ParamRef& p, double step_lr) { return p.lr >= 0 ? p.lr : step_lr; }

// ---- AdamW element kernel ----

struct AdamScalars {
  float wd_mul;  // 1 - lr*wd  (1 when the tensor has no decay: an exact no-op multiply, as in PyTorch)
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bc2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
  float neg_step;  // -lr / (1 - beta1^t)
};

inline void adamw_scalar(float* w, const float* g, float* m, float* v, int64_t i, const AdamScalars& s) {
  float mi = std::fma(g[i], s.one_minus_beta1, m[i] * s.beta1);
  float vi = std::fma(s.one_minus_beta2 * g[i], g[i], v[i] * s.beta2);
  m[i] = mi;
  v[i] = vi;
  float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
  w[i] = w[i] * s.wd_mul + (s.neg_step * mi) / denom;
}

// Same operations as adamw_scalar, lane by lane (IEEE sqrt, division and fma are exact-rounded everywhere, so
// every path gives the same bits). Intrinsics because GCC will not vectorise sqrtf under -fmath-errno.
void adamw_kernel(float* w, const float* g, float* m, float* v, int64_t n, const AdamScalars& s) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 wd = _mm512_set1_ps(s.wd_mul), b1 = _mm512_set1_ps(s.beta1),
               c1 = _mm512_set1_ps(s.one_minus_beta1), b2 = _mm512_set1_ps(s.beta2),
               c2 = _mm512_set1_ps(s.one_minus_beta2), bc = _mm512_set1_ps(s.bc2_sqrt),
               ep = _mm512_set1_ps(s.eps), ns = _mm512_set1_ps(s.neg_step);
  for (; i + 16 <= n; i += 16) {
    __m512 gi = _mm512_loadu_ps(g + i);
    __m512 mi = _mm512_fmadd_ps(gi, c1, _mm512_mul_ps(_mm512_loadu_ps(m + i), b1));
    __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(c2, gi), gi, _mm512_mul_ps(_mm512_loadu_ps(v + i), b2));
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc), ep);
    __m512 wi = _mm512_mul_ps(_mm512_loadu_ps(w + i), wd);
    _mm512_storeu_ps(w + i, _mm512_add_ps(wi, _mm512_div_ps(_mm512_mul_ps(ns, mi), denom)));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 wd = _mm256_set1_ps(s.wd_mul), b1 = _mm256_set1_ps(s.beta1),
               c1 = _mm256_set1_ps(s.one_minus_beta1), b2 = _mm256_set1_ps(s.beta2),
               c2 = _mm256_set1_ps(s.one_minus_beta2), bc = _mm256_set1_ps(s.bc2_sqrt),
               ep = _mm256_set1_ps(s.eps), ns = _mm256_set1_ps(s.neg_step);
  for (; i + 8 <= n; i += 8) {
    __m256 gi = _mm256_loadu_ps(g + i);
    __m256 mi = _mm256_fmadd_ps(gi, c1, _mm256_mul_ps(_mm256_loadu_ps(m + i), b1));
    __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(c2, gi), gi, _mm256_mul_ps(_mm256_loadu_ps(v + i), b2));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc), ep);
    __m256 wi = _mm256_mul_ps(_mm256_loadu_ps(w + i), wd);
    _mm256_storeu_ps(w + i, _mm256_add_ps(wi, _mm256_div_ps(_mm256_mul_ps(ns, mi), denom)));
  }
#endif
  for (; i < n; ++i) adamw_scalar(w, g, m, v, i, s);
}

// ---- SGD element kernels (plain loops: GCC vectorises fma) ----

// d = g + wd*w (only when wd != 0, as PyTorch), then w += -lr * d.
void sgd_kernel(float* __restrict w, const float* __restrict g, int64_t n, float wd, float neg_lr) {
  if (wd != 0.0f) {
    for (int64_t i = 0; i < n; ++i) w[i] = std::fma(std::fma(w[i], wd, g[i]), neg_lr, w[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) w[i] = std::fma(g[i], neg_lr, w[i]);
  }
}

// d as above; buf = d on the first step, else buf = buf*momentum + d; then w += -lr * buf.
void sgd_momentum_kernel(float* __restrict w, const float* __restrict g, float* __restrict buf, int64_t n,
                         float wd, float momentum, float neg_lr, bool first) {
  for (int64_t i = 0; i < n; ++i) {
    float d = wd != 0.0f ? std::fma(w[i], wd, g[i]) : g[i];
    float b = first ? d : buf[i] * momentum + d;
    buf[i] = b;
    w[i] = std::fma(b, neg_lr, w[i]);
  }
}

// ---- state shared by both optimizers ----

struct ParamState {
  Tensor a;  // AdamW: exp_avg; SGD: momentum_buffer
  Tensor b;  // AdamW: exp_avg_sq
  int64_t step = 0;
};

Tensor f32_zeros(int64_t n) {
  return Tensor::zeros({n}, DType::F32);
}

Tensor copy_state_tensor(const std::string& name, const Tensor& t) {
  IRIS_CHECK(t.defined(), "optimizer state: tensor '", name, "' is empty");
  IRIS_CHECK(t.dtype() == DType::F32, "optimizer state: tensor '", name, "' has dtype ",
             dtype_name(t.dtype()), ", expected F32");
  Tensor out = Tensor::empty({t.numel()}, DType::F32);
  Tensor src = t.contiguous();
  std::copy(src.data<float>(), src.data<float>() + t.numel(), out.data<float>());
  return out;
}

int64_t state_int(const std::string& name, const Tensor& t) {
  IRIS_CHECK(t.defined() && t.numel() == 1, "optimizer state: tensor '", name,
             "' must hold one value, has shape ", t.defined() ? shape_str(t.shape()) : "(undefined)");
  double x = t.dtype() == DType::I64 ? double(t.contiguous().data<int64_t>()[0]) : double(t.item_f32(0));
  IRIS_CHECK(x >= 0 && x == std::floor(x) && x < 9e15, "optimizer state: tensor '", name,
             "' must be a non-negative whole number, got ", x);
  return int64_t(x);
}

Tensor int_tensor(int64_t v) {
  return Tensor::from_vector<int64_t>({v}, {1});
}

class StatefulOptimizer : public Optimizer {
 public:
  using Optimizer::Optimizer;

  io::NamedTensors state() const override {
    io::NamedTensors out;
    out.emplace_back("step", int_tensor(steps_));
    for (const auto& [name, st] : states_) {
      if (st.a.defined()) out.emplace_back(prefix_a() + name, st.a);
      if (st.b.defined()) out.emplace_back(prefix_b() + name, st.b);
      // (a parameter without buffers, as in plain SGD, needs no count)
      if (st.a.defined() && st.step != steps_) out.emplace_back("step." + name, int_tensor(st.step));
    }
    return out;
  }

  void load_state(const io::NamedTensors& s) override {
    std::map<std::string, ParamState> states;
    std::map<std::string, int64_t> own_steps;
    bool have_step = false;
    int64_t steps = 0;
    const std::string pa = prefix_a(), pb = prefix_b();
    for (const auto& [name, t] : s) {
      if (name == "step") {
        steps = state_int(name, t);
        have_step = true;
      } else if (name.rfind("step.", 0) == 0) {
        own_steps[name.substr(5)] = state_int(name, t);
      } else if (name.rfind(pa, 0) == 0 && name.size() > pa.size()) {
        states[name.substr(pa.size())].a = copy_state_tensor(name, t);
      } else if (!pb.empty() && name.rfind(pb, 0) == 0 && name.size() > pb.size()) {
        states[name.substr(pb.size())].b = copy_state_tensor(name, t);
      } else {
        throw Error(str_cat("optimizer state: unexpected tensor '", name, "' for ", cfg_.kind,
                            " (expected 'step', '", pa, "<param>'",
                            pb.empty() ? "" : str_cat(", '", pb, "<param>'"), ")"));
      }
    }
    IRIS_CHECK(have_step, "optimizer state: missing tensor 'step'");
    for (auto& [name, st] : states) {
      if (!pb.empty()) {
        IRIS_CHECK(st.a.defined(), "optimizer state: missing tensor '", pa, name, "' (", pb, name,
                   " is present)");
        IRIS_CHECK(st.b.defined(), "optimizer state: missing tensor '", pb, name, "' (", pa, name,
                   " is present)");
        IRIS_CHECK(st.a.numel() == st.b.numel(), "optimizer state: '", pa, name, "' has ", st.a.numel(),
                   " elements but '", pb, name, "' has ", st.b.numel());
      }
      auto it = own_steps.find(name);
      st.step = it != own_steps.end() ? it->second : steps;
    }
    for (const auto& [name, n] : own_steps)
      IRIS_CHECK(states.count(name), "optimizer state: 'step.", name, "' has no '", pa, name, "'");
    states_ = std::move(states);
    steps_ = steps;
  }

  void check_state(const std::vector<ParamRef>& params) const override {
    if (steps_ == 0 || !needs_state()) return;
    for (const ParamRef& p : params) {
      auto it = states_.find(p.name);
      IRIS_CHECK(it != states_.end(), "optimizer state: missing tensor '", prefix_a(), p.name,
                 "' for parameter '", p.name, "' (", p.numel, " elements)");
      check_size(p, it->second);
    }
  }

 protected:
  virtual std::string prefix_a() const = 0;
  virtual std::string prefix_b() const = 0;  // empty when there is no second buffer
  virtual bool needs_state() const = 0;

  void check_size(const ParamRef& p, const ParamState& st) const {
    if (st.a.defined())
      IRIS_CHECK(st.a.numel() == p.numel, "optimizer state: '", prefix_a(), p.name, "' has ", st.a.numel(),
                 " elements but parameter '", p.name, "' has ", p.numel);
    if (st.b.defined())
      IRIS_CHECK(st.b.numel() == p.numel, "optimizer state: '", prefix_b(), p.name, "' has ", st.b.numel(),
                 " elements but parameter '", p.name, "' has ", p.numel);
  }

  bool decays(const ParamRef& p) const { return cfg_.weight_decay != 0 && (cfg_.decay_all || p.decay); }

  std::map<std::string, ParamState> states_;
};

class AdamW final : public StatefulOptimizer {
 public:
  using StatefulOptimizer::StatefulOptimizer;

  void step(const std::vector<ParamRef>& params, double lr) override {
    check_params(params, "AdamW step");
    IRIS_CHECK(std::isfinite(lr) && lr >= 0, "AdamW step: learning rate must be finite and >= 0, got ", lr);
    FlatSpace flat(params);
    std::vector<AdamScalars> scalars(flat.idx.size());
    std::vector<ParamState*> st(flat.idx.size());
    for (size_t k = 0; k < flat.idx.size(); ++k) {
      const ParamRef& p = params[flat.idx[k]];
      ParamState& s = states_[p.name];
      if (!s.a.defined()) s.a = f32_zeros(p.numel);
      if (!s.b.defined()) s.b = f32_zeros(p.numel);
      check_size(p, s);
      st[k] = &s;
    }
    // All checks passed: nothing below throws, so a failed step leaves values and state untouched.
    for (size_t k = 0; k < flat.idx.size(); ++k) {
      const ParamRef& p = params[flat.idx[k]];
      int64_t t = ++st[k]->step;
      // Python's arithmetic in double, each scalar then rounded to float by the tensor op that uses it.
      const double plr = param_lr(p, lr);
      double wd = decays(p) ? cfg_.weight_decay : 0.0;
      double bias_correction1 = 1 - std::pow(cfg_.beta1, double(t));
      double bias_correction2 = 1 - std::pow(cfg_.beta2, double(t));
      double step_size = plr / bias_correction1;
      scalars[k] = AdamScalars{float(1 - plr * wd), float(cfg_.beta1),     float(1 - cfg_.beta1),
                               float(cfg_.beta2),  float(1 - cfg_.beta2), float(std::sqrt(bias_correction2)),
                               float(cfg_.eps),    float(-step_size)};
    }
    cpu::parallel_for(flat.total(), kGrain, [&](int64_t b, int64_t e) {
      flat.for_pieces(b, e, [&](size_t k, int64_t lo, int64_t hi) {
        const ParamRef& p = params[flat.idx[k]];
        adamw_kernel(p.value + lo, p.grad + lo, st[k]->a.data<float>() + lo, st[k]->b.data<float>() + lo,
                     hi - lo, scalars[k]);
      });
    });
    ++steps_;
  }

 protected:
  std::string prefix_a() const override { return "exp_avg."; }
  std::string prefix_b() const override { return "exp_avg_sq."; }
  bool needs_state() const override { return true; }
};

class Sgd final : public StatefulOptimizer {
 public:
  using StatefulOptimizer::StatefulOptimizer;

  void step(const std::vector<ParamRef>& params, double lr) override {
    check_params(params, "SGD step");
    IRIS_CHECK(std::isfinite(lr) && lr >= 0, "SGD step: learning rate must be finite and >= 0, got ", lr);
    FlatSpace flat(params);
    const bool momentum = cfg_.momentum != 0;
    std::vector<ParamState*> st(flat.idx.size(), nullptr);
    std::vector<char> first(flat.idx.size(), 0);
    for (size_t k = 0; k < flat.idx.size(); ++k) {
      const ParamRef& p = params[flat.idx[k]];
      ParamState& s = states_[p.name];
      if (momentum && !s.a.defined()) {
        s.a = f32_zeros(p.numel);
        first[k] = 1;  // PyTorch's buffer starts as a copy of the first (decayed) gradient
      }
      check_size(p, s);
      st[k] = &s;
    }
    for (size_t k = 0; k < flat.idx.size(); ++k) ++st[k]->step;
    const float mom = float(cfg_.momentum);
    cpu::parallel_for(flat.total(), kGrain, [&](int64_t b, int64_t e) {
      flat.for_pieces(b, e, [&](size_t k, int64_t lo, int64_t hi) {
        const ParamRef& p = params[flat.idx[k]];
        float wd = decays(p) ? float(cfg_.weight_decay) : 0.0f;
        const float neg_lr = float(-param_lr(p, lr));
        if (momentum)
          sgd_momentum_kernel(p.value + lo, p.grad + lo, st[k]->a.data<float>() + lo, hi - lo, wd, mom,
                              neg_lr, first[k] != 0);
        else
          sgd_kernel(p.value + lo, p.grad + lo, hi - lo, wd, neg_lr);
      });
    });
    ++steps_;
  }

 protected:
  std::string prefix_a() const override { return "momentum_buffer."; }
  std::string prefix_b() const override { return ""; }
  bool needs_state() const override { return cfg_.momentum != 0; }
};

// Sum of squares over the flat space in fixed blocks (double, vectorised by omp simd), summed in block order:
// the same value for any thread count.
double sum_squares(const std::vector<ParamRef>& params, const FlatSpace& flat) {
  int64_t blocks = (flat.total() + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 0)), 0.0);
  cpu::parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      double acc = 0;
      flat.for_pieces(blk * kNormBlock, std::min(flat.total(), (blk + 1) * kNormBlock),
                      [&](size_t k, int64_t lo, int64_t hi) {
                        const float* g = params[flat.idx[k]].grad;
                        double s = 0;
#pragma omp simd reduction(+ : s)
                        for (int64_t i = lo; i < hi; ++i) s += double(g[i]) * double(g[i]);
                        acc += s;
                      });
      partial[size_t(blk)] = acc;
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

bool default_weight_decay(const std::string& name, const Shape& shape) {
  if (shape.size() < 2) return false;  // biases, norm weights, scalars
  if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) return false;
  return !(contains_ci(name, "norm") || contains_ci(name, "ln_"));
}

std::unique_ptr<Optimizer> Optimizer::create(const OptimizerConfig& cfg) {
  auto finite_nonneg = [](double x) { return std::isfinite(x) && x >= 0; };
  IRIS_CHECK(finite_nonneg(cfg.lr), "optimizer: learning rate must be finite and >= 0, got ", cfg.lr);
  IRIS_CHECK(finite_nonneg(cfg.weight_decay), "optimizer: weight decay must be finite and >= 0, got ",
             cfg.weight_decay);
  if (cfg.kind == "adamw") {
    IRIS_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1, "optimizer: beta1 must be in [0, 1), got ", cfg.beta1);
    IRIS_CHECK(cfg.beta2 >= 0 && cfg.beta2 < 1, "optimizer: beta2 must be in [0, 1), got ", cfg.beta2);
    IRIS_CHECK(finite_nonneg(cfg.eps), "optimizer: eps must be finite and >= 0, got ", cfg.eps);
    IRIS_CHECK(cfg.momentum == 0, "optimizer: momentum is an SGD setting (AdamW uses beta1), got ",
               cfg.momentum);
    return std::unique_ptr<Optimizer>(new AdamW(cfg));
  }
  if (cfg.kind == "sgd") {
    IRIS_CHECK(finite_nonneg(cfg.momentum), "optimizer: momentum must be finite and >= 0, got ",
               cfg.momentum);
    return std::unique_ptr<Optimizer>(new Sgd(cfg));
  }
  throw Error(str_cat("optimizer: unknown kind '", cfg.kind, "' (expected adamw or sgd)"));
}

double grad_norm(const std::vector<ParamRef>& params) {
  FlatSpace flat(params);
  return std::sqrt(sum_squares(params, flat));
}

double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm) {
  FlatSpace flat(params);
  double total = std::sqrt(sum_squares(params, flat));
  if (!(max_norm > 0)) return total;
  // PyTorch: total_norm is a float tensor and `max_norm / (total_norm + 1e-6)` is Tensor.__rtruediv__, which
  // computes reciprocal(total_norm + 1e-6) * max_norm, in float.
  float coef = (1.0f / (float(total) + float(1e-6))) * float(max_norm);
  // A non-finite total gives coef 0 (inf) or nan, which PyTorch multiplies in as well.
  if (coef < 1.0f || std::isnan(coef)) scale_grads(params, coef);
  return total;
}

void scale_grads(const std::vector<ParamRef>& params, float factor) {
  FlatSpace flat(params);
  cpu::parallel_for(flat.total(), kGrain, [&](int64_t b, int64_t e) {
    flat.for_pieces(b, e, [&](size_t k, int64_t lo, int64_t hi) {
      float* g = params[flat.idx[k]].grad;
      for (int64_t i = lo; i < hi; ++i) g[i] *= factor;
    });
  });
}

void zero_grads(const std::vector<ParamRef>& params) {
  FlatSpace flat(params);
  cpu::parallel_for(flat.total(), kGrain, [&](int64_t b, int64_t e) {
    flat.for_pieces(b, e, [&](size_t k, int64_t lo, int64_t hi) {
      std::fill(params[flat.idx[k]].grad + lo, params[flat.idx[k]].grad + hi, 0.0f);
    });
  });
}

}  // namespace iris::train
