// Elementwise arithmetic on float arrays of n elements (residual adds, scaling, bias rows).
#pragma once
#include <cstdint>

namespace iris::ops {

void add(const float* a, const float* b, float* y, int64_t n);  // y = a + b; y may alias a or b
void add_inplace(float* y, const float* x, int64_t n);           // y += x
void scale_inplace(float* y, float s, int64_t n);                // y *= s
void add_bias_rows(float* y, const float* b, int64_t rows, int64_t n);  // y (rows, n) += b (n) on every row
// db (n) += sum over rows of dy (rows, n): the gradient of add_bias_rows' bias. Columns run in parallel.
void sum_rows_accumulate(const float* dy, float* db, int64_t rows, int64_t n);

namespace ref {

template <typename T>
void add(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
template <typename T>
void add_inplace(T* y, const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}
template <typename T>
void scale_inplace(T* y, T s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}
template <typename T>
void add_bias_rows(T* y, const T* b, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) y[r * n + i] += b[i];
}
template <typename T>
void sum_rows_accumulate(const T* dy, T* db, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) db[i] += dy[r * n + i];
}

}  // namespace ref
}  // namespace iris::ops
