// Linear layer: float kernels (through the gemm backend) against the double reference, with and without bias,
// accumulate_dx, null gradients, and finite differences of the reference.
#include <gtest/gtest.h>

#include "ops/linear.h"
#include "ops_test_util.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

TEST(OpsLinear, ForwardBackwardMatchReference) {
  struct Shape {
    int64_t M, K, N;
  };
  for (auto [M, K, N] : {Shape{1, 1, 1}, Shape{1, 33, 17}, Shape{7, 16, 5}, Shape{20, 64, 48}, Shape{65, 31, 129}}) {
    SCOPED_TRACE(std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N));
    VecD x = test::random_vec(test::sz(M * K), 1), W = test::random_vec(test::sz(N * K), 2), b = test::random_vec(test::sz(N), 3);
    VecD dy = test::random_vec(test::sz(M * N), 4), dx0 = test::random_vec(test::sz(M * K), 5);
    VecD dW0 = test::random_vec(test::sz(N * K), 6), db0 = test::random_vec(test::sz(N), 7);
    VecFl xf = test::to_f(x), Wf = test::to_f(W), bf = test::to_f(b), dyf = test::to_f(dy);
    for (bool bias : {false, true}) {
      VecD y(test::sz(M * N));
      ref::linear_forward(x.data(), W.data(), bias ? b.data() : nullptr, y.data(), M, K, N);
      VecFl yf(y.size(), NAN);
      linear_forward(xf.data(), Wf.data(), bias ? bf.data() : nullptr, yf.data(), M, K, N);
      EXPECT_LT(test::scaled_err(yf, y), 1e-5) << "bias " << bias;
    }
    for (bool acc : {false, true}) {
      VecD dx = dx0, dW = dW0, db = db0;
      ref::linear_backward(x.data(), W.data(), dy.data(), dx.data(), dW.data(), db.data(), M, K, N, acc);
      VecFl dxf = test::to_f(dx0), dWf = test::to_f(dW0), dbf = test::to_f(db0);
      linear_backward(xf.data(), Wf.data(), dyf.data(), dxf.data(), dWf.data(), dbf.data(), M, K, N, acc);
      EXPECT_LT(test::scaled_err(dxf, dx), 1e-5) << "accumulate " << acc;
      EXPECT_LT(test::scaled_err(dWf, dW), 1e-5);
      EXPECT_LT(test::scaled_err(dbf, db), 1e-5);
    }
    // Frozen weight and bias: only dx.
    VecFl dxf(test::sz(M * K), NAN);
    linear_backward(xf.data(), Wf.data(), dyf.data(), dxf.data(), nullptr, nullptr, M, K, N);
    VecD dx(test::sz(M * K));
    ref::linear_backward(x.data(), W.data(), dy.data(), dx.data(), static_cast<double*>(nullptr),
                         static_cast<double*>(nullptr), M, K, N);
    EXPECT_LT(test::scaled_err(dxf, dx), 1e-5);
    // Input needs no gradient: only dW.
    VecFl dWf = test::to_f(dW0);
    linear_backward(xf.data(), Wf.data(), dyf.data(), nullptr, dWf.data(), nullptr, M, K, N);
    VecD dW = dW0;
    ref::linear_backward(x.data(), W.data(), dy.data(), static_cast<double*>(nullptr), dW.data(),
                         static_cast<double*>(nullptr), M, K, N);
    EXPECT_LT(test::scaled_err(dWf, dW), 1e-5);
  }
}

TEST(OpsLinear, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t M = 3, K = 4, N = 5;
  VecD x = test::random_vec(test::sz(M * K), 1), W = test::random_vec(test::sz(N * K), 2), b = test::random_vec(test::sz(N), 3);
  VecD dy = test::random_vec(test::sz(M * N), 4), y(test::sz(M * N));
  auto loss = [&] {
    ref::linear_forward(x.data(), W.data(), b.data(), y.data(), M, K, N);
    return test::dot(dy, y);
  };
  VecD fx = test::numeric_grad(x, loss), fW = test::numeric_grad(W, loss), fb = test::numeric_grad(b, loss);
  VecD dx(x.size()), dW(W.size(), 0.0), db(b.size(), 0.0);
  ref::linear_backward(x.data(), W.data(), dy.data(), dx.data(), dW.data(), db.data(), M, K, N);
  EXPECT_LT(test::scaled_err(dx, fx), 1e-7);
  EXPECT_LT(test::scaled_err(dW, fW), 1e-7);
  EXPECT_LT(test::scaled_err(db, fb), 1e-7);
}

}  // namespace
}  // namespace iris::ops
