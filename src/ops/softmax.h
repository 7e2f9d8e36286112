// Row softmax, forward and backward. x, y, dy, dx: (rows, n) row-major.
// Forward: y may alias x. Backward: dx = y * (dy - sum(y * dy)), overwritten; dx may alias dy.
#pragma once
#include <cmath>
#include <cstdint>

namespace iris::ops {

void softmax_forward(const float* x, float* y, int64_t rows, int64_t n);
void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t n);

namespace ref {

template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T m = xr[0];
    for (int64_t i = 1; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(xr[i] - m);
    for (int64_t i = 0; i < n; ++i) y[r * n + i] = std::exp(xr[i] - m) / s;
  }
}

template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    T dot = 0;
    for (int64_t i = 0; i < n; ++i) dot += y[r * n + i] * dy[r * n + i];
    for (int64_t i = 0; i < n; ++i) dx[r * n + i] = y[r * n + i] * (dy[r * n + i] - dot);
  }
}

}  // namespace ref
}  // namespace iris::ops
