// Accuracy of the vector math the kernels rely on (exp, exp2, erfc, sigmoid) against the C library in double,
// over the whole useful range, including overflow, underflow, infinities and NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops/simd.h"

namespace iris::ops::simd {
namespace {

// Max relative error of f (vector) against g (double) over a grid of [lo, hi], ignoring results below
// `tiny` in magnitude (denormals carry fewer bits by design).
template <typename F, typename G>
double max_rel_err(F f, G g, double lo, double hi, int n, double tiny = 1e-37) {
  std::vector<float> x(size_t(n) + kLanes), y(size_t(n) + kLanes);
  for (int i = 0; i < n; ++i) x[size_t(i)] = float(lo + (hi - lo) * i / (n - 1));
  for (int i = 0; i < n; i += kLanes) store(y.data() + i, f(load(x.data() + i)));
  double m = 0;
  for (int i = 0; i < n; ++i) {
    double want = g(double(x[size_t(i)]));
    if (std::fabs(want) < tiny || std::isinf(want)) continue;
    m = std::max(m, std::fabs(double(y[size_t(i)]) - want) / std::fabs(want));
  }
  return m;
}

float first(VecF v) {
  float a[kLanes];
  store(a, v);
  return a[0];
}

TEST(OpsSimd, ExpIsAccurate) {
  EXPECT_LT(max_rel_err([](VecF v) { return exp(v); }, [](double x) { return std::exp(x); }, -87.0, 88.5, 200001),
            1.5e-7);
  EXPECT_LT(max_rel_err([](VecF v) { return exp(v); }, [](double x) { return std::exp(x); }, -1.0, 1.0, 20001), 1.5e-7);
}

TEST(OpsSimd, Exp2IsAccurate) {
  EXPECT_LT(max_rel_err([](VecF v) { return exp2(v); }, [](double x) { return std::exp2(x); }, -125.0, 127.0, 200001),
            1.5e-7);
}

TEST(OpsSimd, ExpEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(first(exp(set1(-inf))), 0.0f);
  EXPECT_EQ(first(exp(set1(inf))), inf);
  EXPECT_EQ(first(exp(set1(100.0f))), inf);
  EXPECT_EQ(first(exp(set1(-120.0f))), 0.0f);
  EXPECT_EQ(first(exp(set1(0.0f))), 1.0f);
  EXPECT_TRUE(std::isnan(first(exp(set1(std::nanf(""))))));
  EXPECT_EQ(first(exp2(set1(-inf))), 0.0f);
  EXPECT_EQ(first(exp2(set1(inf))), inf);
  EXPECT_EQ(first(exp2(set1(3.0f))), 8.0f);
  EXPECT_TRUE(std::isnan(first(exp2(set1(std::nanf(""))))));
}

TEST(OpsSimd, ErfcIsAccurate) {
  // erfc keeps ~1e-6 relative accuracy far into its tail (the GELU of very negative inputs).
  EXPECT_LT(max_rel_err([](VecF v) { return erfc_nonneg(v); }, [](double x) { return std::erfc(x); }, 0.0, 9.0,
                        100001),
            6e-7);
  EXPECT_EQ(first(erfc_nonneg(set1(20.0f))), 0.0f);
  EXPECT_EQ(first(erfc_nonneg(set1(std::numeric_limits<float>::infinity()))), 0.0f);
}

TEST(OpsSimd, NormalCdfIsAccurate) {
  auto phi = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
  EXPECT_LT(max_rel_err([](VecF v) { return normal_cdf(v); }, phi, -13.0, 8.0, 100001), 6e-7);
}

TEST(OpsSimd, SigmoidIsAccurate) {
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  EXPECT_LT(max_rel_err([](VecF v) { return sigmoid(v); }, sig, -80.0, 40.0, 100001), 3e-7);
  // The pair form: 1 - sigmoid(x) without cancellation.
  auto oms = [](VecF v) {
    VecF s, o;
    sigmoid_pair(v, s, o);
    return o;
  };
  EXPECT_LT(max_rel_err(oms, [&](double x) { return sig(-x); }, -40.0, 80.0, 100001), 3e-7);
}

TEST(OpsSimd, ReductionsAndTails) {
  float a[kLanes];
  for (int i = 0; i < kLanes; ++i) a[i] = float(i + 1);
  EXPECT_EQ(reduce_add(load(a)), 136.0f);
  EXPECT_EQ(reduce_max(load(a)), 16.0f);
  EXPECT_EQ(reduce_add(load_n(a, 3)), 6.0f);
  float b[kLanes] = {};
  store_n(b, load(a), 5);
  EXPECT_EQ(b[4], 5.0f);
  EXPECT_EQ(b[5], 0.0f);
  int calls = 0;
  int64_t covered = 0;
  for_chunks(37, [&](int64_t i, int c) {
    EXPECT_EQ(i, covered);
    covered += c;
    ++calls;
  });
  EXPECT_EQ(covered, 37);
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace iris::ops::simd
