// Softmax: float kernel against the double reference (forward, backward), finite differences, aliasing.
#include <gtest/gtest.h>

#include "ops/softmax.h"
#include "ops_test_util.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

TEST(OpsSoftmax, ForwardBackwardMatchReference) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {3, 5}, {4, 16}, {2, 17}, {7, 100}, {3, 1000}, {200, 77}};
  for (auto [rows, n] : shapes) {
    const size_t sz = test::sz(rows * n);
    VecD x = test::random_vec(sz, 1, -10, 10), dy = test::random_vec(sz, 2);
    VecD y(sz), dx(sz);
    ref::softmax_forward(x.data(), y.data(), rows, n);
    ref::softmax_backward(y.data(), dy.data(), dx.data(), rows, n);
    VecFl xf = test::to_f(x), dyf = test::to_f(dy), yf(sz), dxf(sz);
    softmax_forward(xf.data(), yf.data(), rows, n);
    EXPECT_LT(test::scaled_err(yf, y), 1e-6) << rows << "x" << n;
    softmax_backward(yf.data(), dyf.data(), dxf.data(), rows, n);
    EXPECT_LT(test::scaled_err(dxf, dx), 2e-6) << rows << "x" << n;
    softmax_forward(xf.data(), xf.data(), rows, n);  // in place
    EXPECT_EQ(xf, yf);
    softmax_backward(yf.data(), dyf.data(), dyf.data(), rows, n);  // dx aliases dy
    EXPECT_EQ(dyf, dxf);
  }
}

TEST(OpsSoftmax, LargeLogitsDoNotOverflow) {
  VecFl x = {1000.0f, 999.0f, -1000.0f, -INFINITY}, y(4);
  softmax_forward(x.data(), y.data(), 1, 4);
  EXPECT_NEAR(y[0], 0.7310586f, 1e-6f);
  EXPECT_NEAR(y[1], 0.2689414f, 1e-6f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(OpsSoftmax, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, n = 9;
  VecD x = test::random_vec(test::sz(rows * n), 3, -3, 3), dy = test::random_vec(x.size(), 4), y(x.size());
  auto loss = [&] {
    ref::softmax_forward(x.data(), y.data(), rows, n);
    return test::dot(dy, y);
  };
  VecD fd = test::numeric_grad(x, loss);
  loss();
  VecD dx(x.size());
  ref::softmax_backward(y.data(), dy.data(), dx.data(), rows, n);
  EXPECT_LT(test::scaled_err(dx, fd), 1e-7);
}

}  // namespace
}  // namespace iris::ops
