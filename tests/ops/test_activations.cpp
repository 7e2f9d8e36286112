// Activations and SwiGLU: float kernels against the double references (forward and backward), the reference
// backward against finite differences of the reference forward, aliasing, and the name table.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "ops/activations.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

const Activation kAll[] = {Activation::Gelu, Activation::GeluTanh, Activation::QuickGelu, Activation::Silu,
                           Activation::Relu};
const int64_t kSizes[] = {1, 7, 16, 17, 33, 1000, 40000};  // 40000 crosses the parallel grain

// Pointwise |got - want| <= atol + rtol |want|.
void expect_pointwise(const VecFl& got, const VecD& want, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::fabs(double(got[i]) - want[i]), atol + rtol * std::fabs(want[i]))
        << what << " at " << i << ": got " << got[i] << " want " << want[i];
}

// Inputs spanning the interesting range, with the tails (where cancellation would show) included.
VecD inputs(int64_t n, uint64_t seed) { return test::random_vec(test::sz(n), seed, -12.0, 12.0); }

TEST(OpsActivations, ForwardMatchesReference) {
  for (Activation a : kAll)
    for (int64_t n : kSizes) {
      VecD x = inputs(n, 1 + uint64_t(n));
      VecD want(test::sz(n));
      ref::activation_forward(a, x.data(), want.data(), n);
      VecFl xf = test::to_f(x), y(test::sz(n));
      activation_forward(a, xf.data(), y.data(), n);
      expect_pointwise(y, want, 2e-6, 1e-12, std::string(activation_name(a)) + " n=" + std::to_string(n));
      // In place (y aliases x).
      activation_forward(a, xf.data(), xf.data(), n);
      EXPECT_EQ(xf, y);
    }
}

TEST(OpsActivations, BackwardMatchesReference) {
  for (Activation a : kAll)
    for (int64_t n : kSizes) {
      VecD x = inputs(n, 100 + uint64_t(n)), dy = test::random_vec(test::sz(n), 200 + uint64_t(n));
      VecD want(test::sz(n));
      ref::activation_backward(a, x.data(), dy.data(), want.data(), n);
      VecFl xf = test::to_f(x), dyf = test::to_f(dy), dx(test::sz(n));
      activation_backward(a, xf.data(), dyf.data(), dx.data(), n);
      // Relative to each value, plus a floor at the scale of the inputs (the derivative crosses zero).
      expect_pointwise(dx, want, 2e-6, 2e-7, std::string(activation_name(a)) + " backward n=" + std::to_string(n));
      activation_backward(a, xf.data(), dyf.data(), dyf.data(), n);  // dx aliases dy
      EXPECT_EQ(dyf, dx);
    }
}

TEST(OpsActivations, ReferenceBackwardMatchesFiniteDifferences) {
  for (Activation a : kAll) {
    const int64_t n = 41;
    VecD x = test::random_vec(test::sz(n), 7, -4.0, 4.0), dy = test::random_vec(test::sz(n), 8);
    if (a == Activation::Relu)  // keep away from the kink
      for (double& v : x)
        if (std::fabs(v) < 1e-3) v = 0.5;
    VecD y(test::sz(n)), grad(test::sz(n));
    auto loss = [&] {
      ref::activation_forward(a, x.data(), y.data(), n);
      return test::dot(dy, y);
    };
    VecD fd = test::numeric_grad(x, loss);
    ref::activation_backward(a, x.data(), dy.data(), grad.data(), n);
    EXPECT_LT(test::scaled_err(grad, fd), 1e-7) << activation_name(a);
  }
}

TEST(OpsActivations, ExtremeInputs) {
  const float inf = INFINITY;
  VecFl x = {-inf, -1e30f, -200.0f, -90.0f, 0.0f, 90.0f, 200.0f, 1e30f, inf};
  for (Activation a : kAll) {
    VecFl y(x.size()), dx(x.size()), ones(x.size(), 1.0f);
    activation_forward(a, x.data(), y.data(), int64_t(x.size()));
    activation_backward(a, x.data(), ones.data(), dx.data(), int64_t(x.size()));
    for (size_t i = 1; i + 1 < x.size(); ++i) {
      EXPECT_FALSE(std::isnan(y[i])) << activation_name(a) << " x=" << x[i];
      EXPECT_FALSE(std::isnan(dx[i])) << activation_name(a) << " backward x=" << x[i];
    }
    EXPECT_EQ(y[x.size() - 2], 1e30f) << activation_name(a);  // large positive: identity
    EXPECT_NEAR(y[1], 0.0f, 1e-20f) << activation_name(a);    // large negative: 0
    EXPECT_NEAR(dx[1], 0.0f, 1e-20f) << activation_name(a);
    EXPECT_NEAR(dx[x.size() - 2], 1.0f, 1e-6f) << activation_name(a);
  }
}

TEST(OpsActivations, SwigluMatchesReference) {
  for (int64_t n : kSizes) {
    VecD g = inputs(n, 300 + uint64_t(n)), u = test::random_vec(test::sz(n), 400 + uint64_t(n), -3, 3);
    VecD dy = test::random_vec(test::sz(n), 500 + uint64_t(n));
    VecD y(test::sz(n)), dg(test::sz(n)), du(test::sz(n));
    ref::swiglu_forward(g.data(), u.data(), y.data(), n);
    ref::swiglu_backward(g.data(), u.data(), dy.data(), dg.data(), du.data(), n);
    VecFl gf = test::to_f(g), uf = test::to_f(u), dyf = test::to_f(dy), yf(test::sz(n)), dgf(test::sz(n)), duf(test::sz(n));
    swiglu_forward(gf.data(), uf.data(), yf.data(), n);
    swiglu_backward(gf.data(), uf.data(), dyf.data(), dgf.data(), duf.data(), n);
    expect_pointwise(yf, y, 2e-6, 1e-12, "swiglu n=" + std::to_string(n));
    expect_pointwise(dgf, dg, 2e-6, 1e-6, "swiglu dgate n=" + std::to_string(n));
    expect_pointwise(duf, du, 2e-6, 1e-12, "swiglu dup n=" + std::to_string(n));
    // Outputs aliasing inputs: dgate over gate, dup over up.
    swiglu_backward(gf.data(), uf.data(), dyf.data(), gf.data(), uf.data(), n);
    EXPECT_EQ(gf, dgf);
    EXPECT_EQ(uf, duf);
  }
}

TEST(OpsActivations, SwigluReferenceBackwardMatchesFiniteDifferences) {
  const int64_t n = 29;
  VecD g = test::random_vec(test::sz(n), 11, -4, 4), u = test::random_vec(test::sz(n), 12, -2, 2);
  VecD dy = test::random_vec(test::sz(n), 13), y(test::sz(n)), dg(test::sz(n)), du(test::sz(n));
  auto loss = [&] {
    ref::swiglu_forward(g.data(), u.data(), y.data(), n);
    return test::dot(dy, y);
  };
  VecD fd_g = test::numeric_grad(g, loss), fd_u = test::numeric_grad(u, loss);
  ref::swiglu_backward(g.data(), u.data(), dy.data(), dg.data(), du.data(), n);
  EXPECT_LT(test::scaled_err(dg, fd_g), 1e-7);
  EXPECT_LT(test::scaled_err(du, fd_u), 1e-7);
}

TEST(OpsActivations, NamesMapToActivations) {
  EXPECT_EQ(activation_from_name("gelu"), Activation::Gelu);
  EXPECT_EQ(activation_from_name("gelu_pytorch_tanh"), Activation::GeluTanh);
  EXPECT_EQ(activation_from_name("gelu_new"), Activation::GeluTanh);
  EXPECT_EQ(activation_from_name("quick_gelu"), Activation::QuickGelu);
  EXPECT_EQ(activation_from_name("silu"), Activation::Silu);
  EXPECT_EQ(activation_from_name("swish"), Activation::Silu);
  EXPECT_EQ(activation_from_name("relu"), Activation::Relu);
  for (Activation a : kAll) EXPECT_EQ(activation_from_name(activation_name(a)), a);
}

TEST(OpsActivations, UnknownNameThrowsNamingIt) {
  try {
    activation_from_name("bogus");
    FAIL() << "expected iris::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bogus"), std::string::npos) << e.what();
  }
  EXPECT_THROW(activation_from_name(""), Error);
  EXPECT_THROW(activation_from_name("GELU"), Error);
}

}  // namespace
}  // namespace iris::ops
