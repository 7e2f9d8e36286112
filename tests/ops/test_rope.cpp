// RoPE: float kernel against the double reference with full and partial rot_dim, attn_scale, strided rows;
// backward is the transpose (checked against the reference and finite differences); default frequencies.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ops/rope.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

struct RopeCase {
  int64_t T, heads, head_dim, rot_dim, extra_ld;
  float scale;
};
const RopeCase kRopeCases[] = {{1, 1, 2, 2, 0, 1.0f},     {5, 3, 8, 8, 0, 1.0f},    {7, 2, 64, 64, 5, 1.0f},
                       {4, 4, 80, 40, 3, 1.25f},  {3, 2, 34, 34, 0, 0.9f},  {9, 1, 128, 96, 0, 1.0f},
                       {50, 8, 64, 32, 16, 1.0f}, {6, 2, 36, 0, 0, 1.0f}};

std::vector<float> inv_freq_for(int64_t rot_dim) {
  std::vector<float> f(test::sz(std::max<int64_t>(rot_dim / 2, 1)));
  if (rot_dim > 0) rope_default_inv_freq(10000.0f, rot_dim, f.data());
  return f;
}

TEST(OpsRope, ForwardAndBackwardMatchReference) {
  for (const RopeCase& c : kRopeCases) {
    const int64_t ld = c.heads * c.head_dim + c.extra_ld;
    const size_t n = test::sz(c.T * ld);
    std::vector<int64_t> pos(test::sz(c.T));
    for (int64_t t = 0; t < c.T; ++t) pos[test::sz(t)] = (t * 7 + 3) % 61;  // small positions: see below
    std::vector<float> inv = inv_freq_for(c.rot_dim);
    VecD x = test::random_vec(n, 1 + uint64_t(c.T));
    VecD want = x;
    ref::rope_forward(want.data(), ld, pos.data(), inv.data(), c.T, c.heads, c.head_dim, c.rot_dim, double(c.scale));
    VecFl xf = test::to_f(x);
    rope_forward(xf.data(), ld, pos.data(), inv.data(), c.T, c.heads, c.head_dim, c.rot_dim, c.scale);
    // The kernel rounds the angle pos * inv_freq to float as HF does (up to ~4e-6 absolute at pos 60), the
    // double reference does not.
    EXPECT_LT(test::scaled_err(xf, want), 1e-5) << c.T << " " << c.head_dim << " " << c.rot_dim;
    // Untouched: dims >= rot_dim and the padding between rows.
    for (int64_t t = 0; t < c.T; ++t) {
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t d = c.rot_dim; d < c.head_dim; ++d) {
          const size_t i = test::sz(t * ld + h * c.head_dim + d);
          ASSERT_EQ(xf[i], float(x[i]));
        }
      for (int64_t e = c.heads * c.head_dim; e < ld; ++e) ASSERT_EQ(xf[test::sz(t * ld + e)], float(x[test::sz(t * ld + e)]));
    }

    VecD dwant = x;
    ref::rope_backward(dwant.data(), ld, pos.data(), inv.data(), c.T, c.heads, c.head_dim, c.rot_dim, double(c.scale));
    VecFl df = test::to_f(x);
    rope_backward(df.data(), ld, pos.data(), inv.data(), c.T, c.heads, c.head_dim, c.rot_dim, c.scale);
    EXPECT_LT(test::scaled_err(df, dwant), 1e-5);
  }
}

TEST(OpsRope, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t T = 3, heads = 2, head_dim = 10, rot_dim = 6, ld = 23;
  std::vector<int64_t> pos = {0, 5, 17};
  std::vector<float> inv = inv_freq_for(rot_dim);
  VecD x = test::random_vec(test::sz(T * ld), 2), dy = test::random_vec(test::sz(T * ld), 3);
  auto loss = [&] {
    VecD y = x;
    ref::rope_forward(y.data(), ld, pos.data(), inv.data(), T, heads, head_dim, rot_dim, 1.3);
    return test::dot(dy, y);
  };
  VecD fd = test::numeric_grad(x, loss);
  VecD g = dy;
  ref::rope_backward(g.data(), ld, pos.data(), inv.data(), T, heads, head_dim, rot_dim, 1.3);
  EXPECT_LT(test::scaled_err(g, fd), 1e-7);
}

TEST(OpsRope, BackwardUndoesForwardWithUnitScale) {
  const int64_t T = 4, heads = 2, head_dim = 16, ld = 32;
  std::vector<int64_t> pos = {0, 1, 100, 4095};
  std::vector<float> inv = inv_freq_for(head_dim);
  VecFl x = test::to_f(test::random_vec(test::sz(T * ld), 4)), y = x;
  rope_forward(y.data(), ld, pos.data(), inv.data(), T, heads, head_dim, head_dim);
  rope_backward(y.data(), ld, pos.data(), inv.data(), T, heads, head_dim, head_dim);
  EXPECT_LT(test::max_abs_diff(x, y), 1e-6);
}

TEST(OpsRope, DefaultInvFreqMatchesFormula) {
  std::vector<float> f(64);
  rope_default_inv_freq(10000.0f, 128, f.data());
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(f[test::sz(i)], 1.0 / std::pow(10000.0, 2.0 * i / 128), 1e-7);
}

TEST(OpsRope, BadArgumentsThrow) {
  float x[8] = {};
  int64_t pos[1] = {0};
  float inv[4] = {};
  EXPECT_THROW(rope_forward(x, 8, pos, inv, 1, 1, 8, 9, 1.0f), Error);  // rot_dim > head_dim
  EXPECT_THROW(rope_forward(x, 8, pos, inv, 1, 1, 8, 3, 1.0f), Error);  // odd
  EXPECT_THROW(rope_forward(x, 4, pos, inv, 1, 1, 8, 8, 1.0f), Error);  // ld too small
}

}  // namespace
}  // namespace iris::ops
