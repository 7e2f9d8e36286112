// Cross-entropy: loss sum, count and gradient against the reference with ignored rows, in-place gradient,
// finite differences of the reference, and bad targets.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/loss.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

TEST(OpsLoss, CrossEntropyMatchesReference) {
  struct Shape {
    int64_t rows, vocab;
  };
  for (auto [rows, vocab] : {Shape{1, 1}, Shape{1, 5}, Shape{6, 17}, Shape{9, 100}, Shape{4, 32000}, Shape{300, 50}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(vocab));
    VecD logits = test::random_vec(test::sz(rows * vocab), 1, -8, 8);
    std::vector<int32_t> targets(test::sz(rows));
    for (int64_t r = 0; r < rows; ++r) targets[test::sz(r)] = r % 3 == 1 ? -100 : int32_t((r * 7919) % vocab);
    const float scale = 0.25f;
    int64_t count_ref = -1, count = -1;
    VecD dref(logits.size());
    const double loss_ref = ref::cross_entropy_forward_backward(logits.data(), targets.data(), rows, vocab, &count_ref,
                                                                dref.data(), double(scale));
    VecFl lf = test::to_f(logits), df(logits.size(), NAN);
    const double loss = cross_entropy_forward_backward(lf.data(), targets.data(), rows, vocab, &count, df.data(), scale);
    EXPECT_EQ(count, count_ref);
    EXPECT_NEAR(loss, loss_ref, 1e-5 * std::max(1.0, std::fabs(loss_ref)));
    EXPECT_LT(test::scaled_err(df, dref), 1e-6);
    // Loss only; then the gradient written over the logits.
    EXPECT_NEAR(cross_entropy_forward_backward(lf.data(), targets.data(), rows, vocab, nullptr, nullptr, scale), loss,
                1e-12);
    cross_entropy_forward_backward(lf.data(), targets.data(), rows, vocab, nullptr, lf.data(), scale);
    EXPECT_EQ(lf, df);
  }
}

TEST(OpsLoss, AllRowsIgnored) {
  VecFl logits(6, 1.0f), d(6, NAN);
  std::vector<int32_t> t = {-100, -100};
  int64_t count = -1;
  EXPECT_EQ(cross_entropy_forward_backward(logits.data(), t.data(), 2, 3, &count, d.data(), 1.0f), 0.0);
  EXPECT_EQ(count, 0);
  for (float x : d) EXPECT_EQ(x, 0.0f);
  // A custom ignore index.
  t = {7, 1};
  EXPECT_NEAR(cross_entropy_forward_backward(logits.data(), t.data(), 2, 3, &count, nullptr, 1.0f, 7), std::log(3.0),
              1e-6);
  EXPECT_EQ(count, 1);
}

TEST(OpsLoss, ReferenceGradientMatchesFiniteDifferences) {
  const int64_t rows = 4, vocab = 6;
  VecD logits = test::random_vec(test::sz(rows * vocab), 2, -3, 3);
  std::vector<int32_t> targets = {5, -100, 0, 2};
  auto loss = [&] {
    return ref::cross_entropy_forward_backward(logits.data(), targets.data(), rows, vocab, nullptr,
                                               static_cast<double*>(nullptr), 1.0);
  };
  VecD fd = test::numeric_grad(logits, loss);
  VecD g(logits.size());
  ref::cross_entropy_forward_backward(logits.data(), targets.data(), rows, vocab, nullptr, g.data(), 1.0);
  EXPECT_LT(test::scaled_err(g, fd), 1e-7);
}

TEST(OpsLoss, BadTargetThrows) {
  VecFl logits(6, 0.0f);
  std::vector<int32_t> t = {0, 3};
  EXPECT_THROW(cross_entropy_forward_backward(logits.data(), t.data(), 2, 3, nullptr, nullptr, 1.0f), Error);
  t = {-5, 0};
  EXPECT_THROW(cross_entropy_forward_backward(logits.data(), t.data(), 2, 3, nullptr, nullptr, 1.0f), Error);
}

}  // namespace
}  // namespace iris::ops
