// Patchify: im2col against the reference, equivalence with a direct convolution, the scatter-add backward,
// finite differences of the reference, and the shape check.
#include <gtest/gtest.h>

#include "ops/patch.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

TEST(OpsPatch, ForwardBackwardMatchReference) {
  struct Shape {
    int64_t C, H, W, p;
  };
  for (auto [C, H, W, p] : {Shape{1, 1, 1, 1}, Shape{3, 4, 6, 2}, Shape{3, 28, 14, 14}, Shape{2, 15, 10, 5}}) {
    const int64_t nP = (H / p) * (W / p), K = C * p * p;
    VecD px = test::random_vec(test::sz(C * H * W), 1), dcols = test::random_vec(test::sz(nP * K), 2);
    VecD dpx0 = test::random_vec(px.size(), 3);
    VecD cols(test::sz(nP * K)), dpx = dpx0;
    ref::patchify(px.data(), C, H, W, p, cols.data());
    ref::patchify_backward(dcols.data(), C, H, W, p, dpx.data());
    VecFl pf = test::to_f(px), cf(cols.size()), dcf = test::to_f(dcols), dpf = test::to_f(dpx0);
    patchify(pf.data(), C, H, W, p, cf.data());
    EXPECT_EQ(test::scaled_err(cf, cols), 0.0);
    patchify_backward(dcf.data(), C, H, W, p, dpf.data());
    EXPECT_LT(test::scaled_err(dpf, dpx), 1e-7);
  }
}

// cols x W^T equals a stride-p convolution with weight (D, C, p, p).
TEST(OpsPatch, MatchesConvolution) {
  const int64_t C = 3, H = 6, W = 9, p = 3, D = 4, nW = W / p, K = C * p * p;
  VecD px = test::random_vec(test::sz(C * H * W), 4), w = test::random_vec(test::sz(D * K), 5);
  VecD cols(test::sz((H / p) * nW * K));
  ref::patchify(px.data(), C, H, W, p, cols.data());
  for (int64_t py = 0; py < H / p; ++py)
    for (int64_t px_ = 0; px_ < nW; ++px_)
      for (int64_t d = 0; d < D; ++d) {
        double conv = 0, mm = 0;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < p; ++ky)
            for (int64_t kx = 0; kx < p; ++kx)
              conv += w[test::sz(((d * C + c) * p + ky) * p + kx)] * px[test::sz((c * H + py * p + ky) * W + px_ * p + kx)];
        for (int64_t k = 0; k < K; ++k) mm += cols[test::sz((py * nW + px_) * K + k)] * w[test::sz(d * K + k)];
        EXPECT_NEAR(conv, mm, 1e-12);
      }
}

TEST(OpsPatch, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t C = 2, H = 4, W = 2, p = 2;
  VecD px = test::random_vec(test::sz(C * H * W), 6), dcols = test::random_vec(test::sz(C * H * W), 7);
  VecD cols(dcols.size());
  auto loss = [&] {
    ref::patchify(px.data(), C, H, W, p, cols.data());
    return test::dot(dcols, cols);
  };
  VecD fd = test::numeric_grad(px, loss), g(px.size(), 0.0);
  ref::patchify_backward(dcols.data(), C, H, W, p, g.data());
  EXPECT_LT(test::scaled_err(g, fd), 1e-7);
}

TEST(OpsPatch, SizeNotMultipleOfPatchThrows) {
  VecFl px(3 * 10 * 10), cols(1000);
  EXPECT_THROW(patchify(px.data(), 3, 10, 10, 3, cols.data()), Error);
  EXPECT_THROW(patchify_backward(cols.data(), 3, 10, 10, 4, px.data()), Error);
}

}  // namespace
}  // namespace iris::ops
