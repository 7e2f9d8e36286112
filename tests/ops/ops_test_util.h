// Helpers shared by the op tests: random inputs, float/double conversion, error measures, and central finite
// differences of a scalar loss in double.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "test_util.h"

namespace iris::test {

// int64_t -> size_t (named, so `VecD y(sz(n));` is not parsed as a function declaration).
inline size_t sz(int64_t n) { return static_cast<size_t>(n); }

using VecD = std::vector<double>;
using VecFl = std::vector<float>;

// Uniform in [lo, hi); the values are rounded to float so the float kernel and the double reference see the
// same inputs.
inline VecD random_vec(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  VecD v(n);
  for (double& x : v) x = double(float(dist(rng)));
  return v;
}

inline VecFl to_f(const VecD& v) { return VecFl(v.begin(), v.end()); }
inline VecD to_d(const VecFl& v) { return VecD(v.begin(), v.end()); }

// max |got - want| / max(1, max |want|): error relative to the scale of the result.
inline double scaled_err(const float* got, const double* want, size_t n) {
  double m = 0, scale = 1;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < n; ++i) {
    double d = std::fabs(double(got[i]) - want[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m / scale;
}
inline double scaled_err(const VecFl& got, const VecD& want) {
  EXPECT_EQ(got.size(), want.size());
  return scaled_err(got.data(), want.data(), std::min(got.size(), want.size()));
}
inline double scaled_err(const VecD& got, const VecD& want) {
  EXPECT_EQ(got.size(), want.size());
  double m = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    double d = std::fabs(got[i] - want[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m / scale;
}

inline double dot(const VecD& a, const VecD& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// d loss / d x by central differences; x is perturbed in place and restored.
template <typename F>
VecD numeric_grad(VecD& x, F&& loss, double eps = 1e-6) {
  VecD g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double lp = loss();
    x[i] = x0 - eps;
    const double lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

}  // namespace iris::test
