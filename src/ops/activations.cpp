// Activation kernels: each is one vector formula applied over the array, split across threads in large
// contiguous ranges. The formulas avoid cancellation: 1 + tanh(u) is computed as 2 sigmoid(2u), the GELU CDF
// from erfc of |x| on the side where it is small, and 1 - sigmoid(x) as e^-x sigmoid(x).
#include "ops/activations.h"

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

namespace {

using namespace simd;

constexpr int64_t kActivationGrain = 16384;  // elements per thread at least: below that a parallel region costs more

// y[i] = f(x[i]) over n elements.
template <typename F>
void map1(const float* x, float* y, int64_t n, F f) {
  cpu::parallel_for(n, kActivationGrain, [&](int64_t b, int64_t e) {
    for_chunks(e - b, [&](int64_t i, int c) { store_n(y + b + i, f(load_n(x + b + i, c)), c); });
  });
}

// out[i] = f(a[i], b[i]).
template <typename F>
void map2(const float* a, const float* bb, float* out, int64_t n, F f) {
  cpu::parallel_for(n, kActivationGrain, [&](int64_t b, int64_t e) {
    for_chunks(e - b, [&](int64_t i, int c) {
      store_n(out + b + i, f(load_n(a + b + i, c), load_n(bb + b + i, c)), c);
    });
  });
}

constexpr float kSqrt2OverPi = 0.797884560802865356f;  // sqrt(2 / pi)
constexpr float kGeluTanhC = 0.044715f;
constexpr float kQuickGeluC = 1.702f;
constexpr float kInvSqrt2Pi = 0.398942280401432678f;  // 1 / sqrt(2 pi)

// The derivatives below are exactly 0 or 1 in float beyond |x| = 100; clamping there keeps products such
// as x * sigmoid(x) * (1 - sigmoid(x)) * u'(x) from forming inf * 0 at huge |x|.
inline VecF clamp_grad_arg(VecF x) { return min(set1(100.0f), max(set1(-100.0f), x)); }

inline VecF gelu_v(VecF x) { return x * normal_cdf(x); }
inline VecF gelu_grad_v(VecF x) {
  // Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
  VecF h = x * x * set1(0.5f);
  return fmadd(x * exp(-h), set1(kInvSqrt2Pi), normal_cdf(x));
}

inline VecF gelu_tanh_v(VecF x) {
  // 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + c x^3).
  VecF u2 = x * fmadd(x * x, set1(2.0f * kSqrt2OverPi * kGeluTanhC), set1(2.0f * kSqrt2OverPi));
  return x * sigmoid(u2);
}
inline VecF gelu_tanh_grad_v(VecF x) {
  // d/dx [x s(2u)] = s + x s (1 - s) 2 u', u' = sqrt(2/pi) (1 + 3 c x^2).
  x = clamp_grad_arg(x);
  VecF xx = x * x;
  VecF u2 = x * fmadd(xx, set1(2.0f * kSqrt2OverPi * kGeluTanhC), set1(2.0f * kSqrt2OverPi));
  VecF du2 = fmadd(xx, set1(6.0f * kSqrt2OverPi * kGeluTanhC), set1(2.0f * kSqrt2OverPi));
  VecF s, oms;
  sigmoid_pair(u2, s, oms);
  return fmadd(x * s * oms, du2, s);
}

inline VecF quick_gelu_v(VecF x) { return x * sigmoid(x * set1(kQuickGeluC)); }
inline VecF quick_gelu_grad_v(VecF x) {
  x = clamp_grad_arg(x);
  VecF s, oms;
  sigmoid_pair(x * set1(kQuickGeluC), s, oms);
  return fmadd(x * s * oms, set1(kQuickGeluC), s);
}

inline VecF silu_v(VecF x) { return x * sigmoid(x); }
inline VecF silu_grad_v(VecF x) {
  x = clamp_grad_arg(x);
  VecF s, oms;
  sigmoid_pair(x, s, oms);
  return fmadd(x * s, oms, s);
}

inline VecF relu_v(VecF x) { return max(zero(), x); }  // NaN stays NaN
inline VecF relu_grad_dy(VecF x, VecF dy) { return select(cmp_gt(x, zero()), dy, zero()); }

}  // namespace

void gelu_forward(const float* x, float* y, int64_t n) { map1(x, y, n, gelu_v); }
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  map2(x, dy, dx, n, [](VecF a, VecF d) { return d * gelu_grad_v(a); });
}
void gelu_tanh_forward(const float* x, float* y, int64_t n) { map1(x, y, n, gelu_tanh_v); }
void gelu_tanh_backward(const float* x, const float* dy, float* dx, int64_t n) {
  map2(x, dy, dx, n, [](VecF a, VecF d) { return d * gelu_tanh_grad_v(a); });
}
void quick_gelu_forward(const float* x, float* y, int64_t n) { map1(x, y, n, quick_gelu_v); }
void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  map2(x, dy, dx, n, [](VecF a, VecF d) { return d * quick_gelu_grad_v(a); });
}
void silu_forward(const float* x, float* y, int64_t n) { map1(x, y, n, silu_v); }
void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  map2(x, dy, dx, n, [](VecF a, VecF d) { return d * silu_grad_v(a); });
}
void relu_forward(const float* x, float* y, int64_t n) { map1(x, y, n, relu_v); }
void relu_backward(const float* x, const float* dy, float* dx, int64_t n) { map2(x, dy, dx, n, relu_grad_dy); }

Activation activation_from_name(const std::string& hf_name) {
  if (hf_name == "gelu") return Activation::Gelu;
  if (hf_name == "gelu_pytorch_tanh" || hf_name == "gelu_new") return Activation::GeluTanh;
  if (hf_name == "quick_gelu") return Activation::QuickGelu;
  if (hf_name == "silu" || hf_name == "swish") return Activation::Silu;
  if (hf_name == "relu") return Activation::Relu;
  throw Error(str_cat("unknown activation '", hf_name,
                      "' (expected one of: gelu, gelu_pytorch_tanh, gelu_new, quick_gelu, silu, swish, relu)"));
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_pytorch_tanh";
    case Activation::QuickGelu: return "quick_gelu";
    case Activation::Silu: return "silu";
    case Activation::Relu: return "relu";
  }
  return "?";
}

void activation_forward(Activation a, const float* x, float* y, int64_t n) {
  switch (a) {
    case Activation::Gelu: return gelu_forward(x, y, n);
    case Activation::GeluTanh: return gelu_tanh_forward(x, y, n);
    case Activation::QuickGelu: return quick_gelu_forward(x, y, n);
    case Activation::Silu: return silu_forward(x, y, n);
    case Activation::Relu: return relu_forward(x, y, n);
  }
  IRIS_ASSERT(false);
}

void activation_backward(Activation a, const float* x, const float* dy, float* dx, int64_t n) {
  switch (a) {
    case Activation::Gelu: return gelu_backward(x, dy, dx, n);
    case Activation::GeluTanh: return gelu_tanh_backward(x, dy, dx, n);
    case Activation::QuickGelu: return quick_gelu_backward(x, dy, dx, n);
    case Activation::Silu: return silu_backward(x, dy, dx, n);
    case Activation::Relu: return relu_backward(x, dy, dx, n);
  }
  IRIS_ASSERT(false);
}

void swiglu_forward(const float* gate, const float* up, float* y, int64_t n) {
  map2(gate, up, y, n, [](VecF g, VecF u) { return silu_v(g) * u; });
}

void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n) {
  cpu::parallel_for(n, kActivationGrain, [&](int64_t b, int64_t e) {
    for_chunks(e - b, [&](int64_t i0, int c) {
      const int64_t i = b + i0;
      // All loads happen before the stores, so the outputs may alias the inputs.
      VecF g = load_n(gate + i, c), u = load_n(up + i, c), d = load_n(dy + i, c);
      store_n(dgate + i, d * u * silu_grad_v(g), c);
      store_n(dup + i, d * silu_v(g), c);
    });
  });
}

}  // namespace iris::ops
