// Linear (+LoRA) and norm layers over the ops kernels: inference forwards, training forward/backward pairs, and
// the parameter slots training binds master copies through.
#include "nn/layers.h"

#include "ops/linear.h"
#include "ops/norm.h"

namespace iris::nn {

namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xd (M, in) = dropout(x) with the adapter's mask, scaled by 1 / (1 - p).
void lora_dropout(const LoraAdapter& a, const float* x, int64_t n, float* xd) {
  const float keep_scale = 1.0f / (1.0f - a.dropout);
  for (int64_t i = 0; i < n; ++i) xd[i] = lora_dropout_keep(a.dropout_seed, i, a.dropout) ? x[i] * keep_scale : 0.0f;
}

}  // namespace

bool lora_dropout_keep(uint64_t seed, int64_t index, float p) {
  if (p <= 0.0f) return true;
  // 24 random bits -> [0, 1): exact in float, so the comparison is the same everywhere.
  const float u = float(splitmix64(seed ^ splitmix64(uint64_t(index))) >> 40) * (1.0f / 16777216.0f);
  return u >= p;
}

void Linear::lora_forward(const float* x, int64_t M, float* y, bool train) const {
  const LoraAdapter& a = *lora;
  const int64_t K = in_features(), N = out_features(), r = a.rank();
  if (M == 0) return;
  std::vector<float> xd;
  const float* xin = x;
  if (train && a.dropout > 0.0f) {
    xd.resize(size_t(M * K));
    lora_dropout(a, x, M * K, xd.data());
    xin = xd.data();
  }
  std::vector<float> t(size_t(M * r));  // (M, r) = xd A^T
  cpu::gemm_f32(false, true, M, r, K, 1.0f, xin, K, a.A.data<float>(), K, 0.0f, t.data(), r);
  cpu::gemm_f32(false, true, M, N, r, a.scale, t.data(), r, a.B.data<float>(), r, 1.0f, y, N);
}

void Linear::backward(const float* x, const float* dy, int64_t M, float* dx, bool accumulate_dx) const {
  const int64_t K = in_features(), N = out_features();
  if (M == 0) return;
  const Tensor& W = w.tensor();
  if (W.dtype() == DType::F32) {
    ops::linear_backward(x, W.data<float>(), dy, dx, grad_w, grad_b, M, K, N, accumulate_dx);
  } else {
    IRIS_CHECK(grad_w == nullptr, "linear backward: a trained weight must be an f32 master copy, got ",
               dtype_name(W.dtype()));
    if (dx) w.backward_input(dy, M, dx, accumulate_dx);
    if (grad_b) ops::linear_backward(x, nullptr, dy, nullptr, nullptr, grad_b, M, K, N);
  }
  if (!lora || (!dx && !lora->trains())) return;
  // y += s * xd A^T B^T with t = xd A^T (M, r): dB += s dy^T t; dt = s dy B; dA += dt^T xd; dxd = dt A.
  const LoraAdapter& a = *lora;
  const int64_t r = a.rank();
  std::vector<float> xd;
  const float* xin = x;
  if (a.dropout > 0.0f) {
    xd.resize(size_t(M * K));
    lora_dropout(a, x, M * K, xd.data());
    xin = xd.data();
  }
  std::vector<float> t(size_t(M * r)), dt(size_t(M * r));
  if (a.grad_B) {
    cpu::gemm_f32(false, true, M, r, K, 1.0f, xin, K, a.A.data<float>(), K, 0.0f, t.data(), r);
    cpu::gemm_f32(true, false, N, r, M, a.scale, dy, N, t.data(), r, 1.0f, a.grad_B, r);
  }
  cpu::gemm_f32(false, false, M, r, N, a.scale, dy, N, a.B.data<float>(), r, 0.0f, dt.data(), r);
  if (a.grad_A) cpu::gemm_f32(true, false, r, K, M, 1.0f, dt.data(), r, xin, K, 1.0f, a.grad_A, K);
  if (!dx) return;
  if (a.dropout > 0.0f) {
    // The dropout's backward applies the same mask and scale to dxd.
    std::vector<float> dxd(size_t(M * K));
    cpu::gemm_f32(false, false, M, K, r, 1.0f, dt.data(), r, a.A.data<float>(), K, 0.0f, dxd.data(), K);
    lora_dropout(a, dxd.data(), M * K, dxd.data());
    for (int64_t i = 0; i < M * K; ++i) dx[i] += dxd[size_t(i)];
  } else {
    cpu::gemm_f32(false, false, M, K, r, 1.0f, dt.data(), r, a.A.data<float>(), K, 1.0f, dx, K);
  }
}

void LayerNorm::forward(const float* x, float* y, int64_t rows) const {
  ops::layernorm_forward(x, w.data<float>(), b.data<float>(), y, nullptr, nullptr, rows, dim(), eps);
}

void LayerNorm::forward_train(const float* x, float* y, float* mean, float* rstd, int64_t rows) const {
  ops::layernorm_forward(x, w.data<float>(), b.data<float>(), y, mean, rstd, rows, dim(), eps);
}

void LayerNorm::backward(const float* x, const float* mean, const float* rstd, const float* dy, float* dx,
                         int64_t rows) const {
  ops::layernorm_backward(x, w.data<float>(), mean, rstd, dy, dx, grad_w, grad_b, rows, dim());
}

void RMSNorm::forward(const float* x, float* y, int64_t rows) const {
  ops::rmsnorm_forward(x, w.data<float>(), y, nullptr, rows, dim(), eps);
}

void RMSNorm::forward_train(const float* x, float* y, float* rstd, int64_t rows) const {
  ops::rmsnorm_forward(x, w.data<float>(), y, rstd, rows, dim(), eps);
}

void RMSNorm::backward(const float* x, const float* rstd, const float* dy, float* dx, int64_t rows) const {
  ops::rmsnorm_backward(x, w.data<float>(), rstd, dy, dx, grad_w, rows, dim());
}

void linear_slots(const std::string& module, Linear& l, std::vector<ParamSlot>& out) {
  Linear* p = &l;
  ParamSlot w;
  w.name = module + ".weight";
  w.value = l.w.tensor();
  w.bind = [p](const Tensor& master, float* grad, cpu::MatmulPrecision precision) {
    p->w = cpu::LinearWeight(master, precision);
    p->grad_w = grad;
  };
  w.refresh = [p] {
    if (p->w.precision() == cpu::MatmulPrecision::BF16) p->w.repack();
  };
  out.push_back(std::move(w));
  if (l.b.defined()) {
    ParamSlot b;
    b.name = module + ".bias";
    b.value = l.b;
    b.decay = false;
    b.bind = [p](const Tensor& master, float* grad, cpu::MatmulPrecision) {
      p->b = master;
      p->grad_b = grad;
    };
    out.push_back(std::move(b));
  }
}

void layernorm_slots(const std::string& module, LayerNorm& n, std::vector<ParamSlot>& out) {
  LayerNorm* p = &n;
  out.push_back({module + ".weight", n.w, false, [p](const Tensor& m, float* g, cpu::MatmulPrecision) {
                   p->w = m;
                   p->grad_w = g;
                 }, {}});
  out.push_back({module + ".bias", n.b, false, [p](const Tensor& m, float* g, cpu::MatmulPrecision) {
                   p->b = m;
                   p->grad_b = g;
                 }, {}});
}

void rmsnorm_slots(const std::string& module, RMSNorm& n, std::vector<ParamSlot>& out) {
  RMSNorm* p = &n;
  out.push_back({module + ".weight", n.w, false, [p](const Tensor& m, float* g, cpu::MatmulPrecision) {
                   p->w = m;
                   p->grad_w = g;
                 }, {}});
}

ParamSlot tensor_slot(const std::string& name, Tensor& t, float*& grad, bool decay) {
  Tensor* pt = &t;
  float** pg = &grad;
  return {name, t, decay, [pt, pg](const Tensor& m, float* g, cpu::MatmulPrecision) {
            *pt = m;
            *pg = g;
          }, {}};
}

}  // namespace iris::nn
