// RMSNorm and LayerNorm: float kernels against double references (forward, backward with accumulation into
// dw/db), reference backward against finite differences, aliasing and null optional outputs.
#include <gtest/gtest.h>

#include "ops/norm.h"
#include "ops_test_util.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

struct Shape {
  int64_t rows, dim;
};
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 16}, {4, 17}, {9, 100}, {2, 1024}, {37, 300}, {300, 64}};

TEST(OpsNorm, RmsnormForwardBackwardMatchReference) {
  for (auto [rows, dim] : kShapes) {
    const size_t n = test::sz(rows * dim);
    VecD x = test::random_vec(n, 1, -2, 2), w = test::random_vec(test::sz(dim), 2, 0.5, 1.5);
    VecD dy = test::random_vec(n, 3), dw0 = test::random_vec(test::sz(dim), 4);
    VecD y(n), rstd(test::sz(rows)), dx(n), dw = dw0;
    ref::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-5);
    ref::rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), rows, dim);

    VecFl xf = test::to_f(x), wf = test::to_f(w), dyf = test::to_f(dy), dwf = test::to_f(dw0);
    VecFl yf(n), rf(test::sz(rows)), dxf(n);
    rmsnorm_forward(xf.data(), wf.data(), yf.data(), rf.data(), rows, dim, 1e-5f);
    EXPECT_LT(test::scaled_err(yf, y), 2e-6) << rows << "x" << dim;
    EXPECT_LT(test::scaled_err(rf, rstd), 2e-6) << rows << "x" << dim;
    rmsnorm_backward(xf.data(), wf.data(), rf.data(), dyf.data(), dxf.data(), dwf.data(), rows, dim);
    EXPECT_LT(test::scaled_err(dxf, dx), 5e-6) << rows << "x" << dim;
    EXPECT_LT(test::scaled_err(dwf, dw), 5e-6) << rows << "x" << dim;

    // Optional rstd; y aliasing x; dx aliasing dy; frozen weight (dw == nullptr).
    VecFl y2 = xf;
    rmsnorm_forward(y2.data(), wf.data(), y2.data(), nullptr, rows, dim, 1e-5f);
    EXPECT_EQ(y2, yf);
    rmsnorm_backward(xf.data(), wf.data(), rf.data(), dyf.data(), dyf.data(), nullptr, rows, dim);
    EXPECT_EQ(dyf, dxf);
  }
}

TEST(OpsNorm, LayernormForwardBackwardMatchReference) {
  for (auto [rows, dim] : kShapes) {
    const size_t n = test::sz(rows * dim);
    // An offset mean checks the two-pass variance.
    VecD x = test::random_vec(n, 5, 2, 6), w = test::random_vec(test::sz(dim), 6, 0.5, 1.5);
    VecD b = test::random_vec(test::sz(dim), 7), dy = test::random_vec(n, 8);
    VecD dw0 = test::random_vec(test::sz(dim), 9), db0 = test::random_vec(test::sz(dim), 10);
    VecD y(n), mean(test::sz(rows)), rstd(test::sz(rows)), dx(n), dw = dw0, db = db0;
    ref::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, dim, 1e-5);
    ref::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(),
                            rows, dim);

    VecFl xf = test::to_f(x), wf = test::to_f(w), bf = test::to_f(b), dyf = test::to_f(dy);
    VecFl dwf = test::to_f(dw0), dbf = test::to_f(db0), yf(n), mf(test::sz(rows)), rf(test::sz(rows)), dxf(n);
    layernorm_forward(xf.data(), wf.data(), bf.data(), yf.data(), mf.data(), rf.data(), rows, dim, 1e-5f);
    EXPECT_LT(test::scaled_err(yf, y), 5e-6) << rows << "x" << dim;
    EXPECT_LT(test::scaled_err(mf, mean), 2e-6) << rows << "x" << dim;
    // Constant rows (dim == 1) have variance 0 and rstd 1/sqrt(eps): compare relative to that.
    EXPECT_LT(test::scaled_err(rf, rstd) / (dim == 1 ? 316.0 : 1.0), 5e-6) << rows << "x" << dim;
    layernorm_backward(xf.data(), wf.data(), mf.data(), rf.data(), dyf.data(), dxf.data(), dwf.data(), dbf.data(),
                       rows, dim);
    EXPECT_LT(test::scaled_err(dxf, dx), 2e-5) << rows << "x" << dim;
    EXPECT_LT(test::scaled_err(dwf, dw), 5e-6) << rows << "x" << dim;
    EXPECT_LT(test::scaled_err(dbf, db), 5e-6) << rows << "x" << dim;

    // No bias; no mean/rstd outputs; dx aliasing dy with frozen weights.
    VecD yb(n);
    ref::layernorm_forward(x.data(), w.data(), static_cast<const double*>(nullptr), yb.data(), static_cast<double*>(nullptr),
                           static_cast<double*>(nullptr), rows, dim, 1e-5);
    VecFl ybf(n);
    layernorm_forward(xf.data(), wf.data(), nullptr, ybf.data(), nullptr, nullptr, rows, dim, 1e-5f);
    EXPECT_LT(test::scaled_err(ybf, yb), 5e-6) << rows << "x" << dim;
    layernorm_backward(xf.data(), wf.data(), mf.data(), rf.data(), dyf.data(), dyf.data(), nullptr, nullptr, rows, dim);
    EXPECT_EQ(dyf, dxf);
  }
}

TEST(OpsNorm, RmsnormReferenceBackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, dim = 11;
  VecD x = test::random_vec(test::sz(rows * dim), 11, -2, 2), w = test::random_vec(test::sz(dim), 12, 0.5, 1.5);
  VecD dy = test::random_vec(test::sz(rows * dim), 13), y(x.size()), rstd(test::sz(rows));
  auto loss = [&] {
    ref::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-5);
    return test::dot(dy, y);
  };
  VecD fd_x = test::numeric_grad(x, loss), fd_w = test::numeric_grad(w, loss);
  loss();
  VecD dx(x.size()), dw(test::sz(dim), 0.0);
  ref::rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), rows, dim);
  EXPECT_LT(test::scaled_err(dx, fd_x), 1e-7);
  EXPECT_LT(test::scaled_err(dw, fd_w), 1e-7);
}

TEST(OpsNorm, LayernormReferenceBackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, dim = 11;
  VecD x = test::random_vec(test::sz(rows * dim), 14, -2, 2), w = test::random_vec(test::sz(dim), 15, 0.5, 1.5);
  VecD b = test::random_vec(test::sz(dim), 16), dy = test::random_vec(test::sz(rows * dim), 17);
  VecD y(x.size()), mean(test::sz(rows)), rstd(test::sz(rows));
  auto loss = [&] {
    ref::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, dim, 1e-5);
    return test::dot(dy, y);
  };
  VecD fd_x = test::numeric_grad(x, loss), fd_w = test::numeric_grad(w, loss), fd_b = test::numeric_grad(b, loss);
  loss();
  VecD dx(x.size()), dw(test::sz(dim), 0.0), db(test::sz(dim), 0.0);
  ref::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(),
                          rows, dim);
  EXPECT_LT(test::scaled_err(dx, fd_x), 1e-7);
  EXPECT_LT(test::scaled_err(dw, fd_w), 1e-7);
  EXPECT_LT(test::scaled_err(db, fd_b), 1e-7);
}

}  // namespace
}  // namespace iris::ops
