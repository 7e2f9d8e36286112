// Fully connected layer on raw f32 arrays: y (M, N) = x (M, K) W^T + b, W (N, K) as Hugging Face stores it.
// The products go through cpu::gemm_f32 (the one matrix-multiply backend).
#pragma once
#include <cstdint>

namespace iris::ops {

// b (N) may be nullptr.
void linear_forward(const float* x, const float* W, const float* b, float* y, int64_t M, int64_t K, int64_t N);

// dy (M, N). dx (M, K) = dy W, overwritten unless accumulate_dx; dW (N, K) += dy^T x; db (N) += sum of dy rows.
// Any of dx / dW / db may be nullptr (frozen weights, or an input that needs no gradient).
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int64_t M,
                     int64_t K, int64_t N, bool accumulate_dx = false);

namespace ref {

template <typename T>
void linear_forward(const T* x, const T* W, const T* b, T* y, int64_t M, int64_t K, int64_t N) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      T s = b ? b[n] : T(0);
      for (int64_t k = 0; k < K; ++k) s += x[m * K + k] * W[n * K + k];
      y[m * N + n] = s;
    }
}

template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, T* db, int64_t M, int64_t K, int64_t N,
                     bool accumulate_dx = false) {
  if (dx)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        T s = accumulate_dx ? dx[m * K + k] : T(0);
        for (int64_t n = 0; n < N; ++n) s += dy[m * N + n] * W[n * K + k];
        dx[m * K + k] = s;
      }
  if (dW)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t m = 0; m < M; ++m) dW[n * K + k] += dy[m * N + n] * x[m * K + k];
  if (db)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < M; ++m) db[n] += dy[m * N + n];
}

}  // namespace ref
}  // namespace iris::ops
