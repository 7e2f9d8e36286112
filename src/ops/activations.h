// Elementwise activations (GELU exact and tanh, QuickGELU, SiLU, ReLU) and SwiGLU, forward and backward, plus
// the name table that maps a Hugging Face `hidden_act` / `projector_hidden_act` string to one of them.
// All arrays are n floats. Forward: y may alias x. Backward: dx = dy * f'(x), overwritten; dx may alias dy.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

namespace iris::ops {

void gelu_forward(const float* x, float* y, int64_t n);  // exact: 0.5 x (1 + erf(x / sqrt 2))
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
void gelu_tanh_forward(const float* x, float* y, int64_t n);  // "gelu_pytorch_tanh" / "gelu_new"
void gelu_tanh_backward(const float* x, const float* dy, float* dx, int64_t n);
void quick_gelu_forward(const float* x, float* y, int64_t n);  // x * sigmoid(1.702 x) (CLIP)
void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
void silu_forward(const float* x, float* y, int64_t n);  // x * sigmoid(x)
void silu_backward(const float* x, const float* dy, float* dx, int64_t n);
void relu_forward(const float* x, float* y, int64_t n);
void relu_backward(const float* x, const float* dy, float* dx, int64_t n);  // dy where x > 0, else 0

enum class Activation { Gelu, GeluTanh, QuickGelu, Silu, Relu };

// "gelu", "gelu_pytorch_tanh", "gelu_new", "quick_gelu", "silu", "swish", "relu"; throws iris::Error otherwise.
Activation activation_from_name(const std::string& hf_name);
const char* activation_name(Activation a);
void activation_forward(Activation a, const float* x, float* y, int64_t n);
void activation_backward(Activation a, const float* x, const float* dy, float* dx, int64_t n);

// Llama MLP: y = silu(gate) * up. Any output may alias any input.
void swiglu_forward(const float* gate, const float* up, float* y, int64_t n);
void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n);

// Naive references in any floating type (tests use double): the textbook formulas, one element at a time.
namespace ref {

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
template <typename T>
T gelu(T x) {
  return T(0.5) * x * (T(1) + std::erf(x / std::sqrt(T(2))));
}
template <typename T>
T gelu_grad(T x) {
  const T pi = T(3.14159265358979323846);
  return T(0.5) * (T(1) + std::erf(x / std::sqrt(T(2)))) + x * std::exp(-x * x / T(2)) / std::sqrt(T(2) * pi);
}
template <typename T>
T gelu_tanh(T x) {
  const T pi = T(3.14159265358979323846);
  return T(0.5) * x * (T(1) + std::tanh(std::sqrt(T(2) / pi) * (x + T(0.044715) * x * x * x)));
}
template <typename T>
T gelu_tanh_grad(T x) {
  const T pi = T(3.14159265358979323846);
  const T k = std::sqrt(T(2) / pi);
  T th = std::tanh(k * (x + T(0.044715) * x * x * x));
  return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * k * (T(1) + T(3) * T(0.044715) * x * x);
}
template <typename T>
T quick_gelu(T x) {
  return x * sigmoid(T(1.702) * x);
}
template <typename T>
T quick_gelu_grad(T x) {
  T s = sigmoid(T(1.702) * x);
  return s + T(1.702) * x * s * (T(1) - s);
}
template <typename T>
T silu(T x) {
  return x * sigmoid(x);
}
template <typename T>
T silu_grad(T x) {
  T s = sigmoid(x);
  return s + x * s * (T(1) - s);
}
template <typename T>
T relu(T x) {
  return x > T(0) ? x : T(0);
}
template <typename T>
T relu_grad(T x) {
  return x > T(0) ? T(1) : T(0);
}

template <typename T>
T activation(Activation a, T x) {
  switch (a) {
    case Activation::Gelu: return gelu(x);
    case Activation::GeluTanh: return gelu_tanh(x);
    case Activation::QuickGelu: return quick_gelu(x);
    case Activation::Silu: return silu(x);
    case Activation::Relu: return relu(x);
  }
  return x;
}
template <typename T>
T activation_grad(Activation a, T x) {
  switch (a) {
    case Activation::Gelu: return gelu_grad(x);
    case Activation::GeluTanh: return gelu_tanh_grad(x);
    case Activation::QuickGelu: return quick_gelu_grad(x);
    case Activation::Silu: return silu_grad(x);
    case Activation::Relu: return relu_grad(x);
  }
  return T(1);
}

template <typename T>
void activation_forward(Activation a, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = activation(a, x[i]);
}
template <typename T>
void activation_backward(Activation a, const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * activation_grad(a, x[i]);
}
template <typename T>
void swiglu_forward(const T* gate, const T* up, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = silu(gate[i]) * up[i];
}
template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* dy, T* dgate, T* dup, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T g = gate[i], u = up[i], d = dy[i];
    dgate[i] = d * u * silu_grad(g);
    dup[i] = d * silu(g);
  }
}

}  // namespace ref
}  // namespace iris::ops
