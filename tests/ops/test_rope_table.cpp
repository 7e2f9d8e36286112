// RoPE tables (ops::RopeTable): one position stream gives exactly ops::rope_forward / rope_backward; M-RoPE
// tables (3 streams, Qwen2-VL's mrope sections) against a naive double reference that picks each frequency
// pair's stream; tables from angles; rope_apply_table_backward is the exact transpose of rope_apply_table
// (matrices built from unit vectors, the dot-product identity) and the gradient of a double reference of the
// rotation (central differences); strided rows (q and k inside a (T, 3D) qkv buffer) leave every other column
// untouched; bad arguments throw.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <vector>

#include "ops/rope.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace rope_table_test {
namespace {

using test::VecD;
using test::VecFl;

// Positions (n_streams, T) of small values (< 64, like the existing RoPE tests: the float angle pos *
// inv_freq is then within ~4e-6 of the exact product), different per stream.
std::vector<int64_t> rt_positions(int64_t n_streams, int64_t T, int64_t mul) {
  std::vector<int64_t> pos(test::sz(n_streams * T));
  for (int64_t s = 0; s < n_streams; ++s)
    for (int64_t t = 0; t < T; ++t) pos[test::sz(s * T + t)] = (t * (mul + 2 * s) + 3 * s + 1) % 61;
  return pos;
}

// Qwen2-VL's mrope_section as a stream per frequency pair: [2, 3, 3] -> 0 0 1 1 1 2 2 2.
std::vector<int> rt_stream_of(const std::vector<int>& sections) {
  std::vector<int> s;
  for (size_t k = 0; k < sections.size(); ++k) s.insert(s.end(), size_t(sections[k]), int(k));
  return s;
}

// Naive double rotation with given cos / sin (T, half): rotate-half on the first 2 * half dims of every head.
// sign -1: the transpose.
void rt_rotate_ref(double* x, int64_t ld, const double* c, const double* s, int64_t T, int64_t half,
                   int64_t heads, int64_t head_dim, double sign) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        double* xh = x + t * ld + h * head_dim;
        const double cc = c[t * half + i], ss = sign * s[t * half + i], a = xh[i], b = xh[i + half];
        xh[i] = a * cc - b * ss;
        xh[i + half] = b * cc + a * ss;
      }
}

bool rt_same_bits(const VecFl& a, const VecFl& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(RopeTable, OneStreamIsRopeForwardBitForBit) {
  struct Case {
    int64_t T, heads, head_dim, rot_dim, extra_ld;
    float scale;
  };
  const Case cases[] = {{1, 1, 2, 2, 0, 1.0f},    {5, 3, 8, 8, 0, 1.0f},   {7, 2, 64, 64, 5, 1.0f},
                        {4, 4, 80, 40, 3, 1.25f}, {3, 2, 34, 34, 0, 0.9f}, {33, 8, 64, 32, 16, 1.0f}};
  for (const Case& c : cases) {
    const int64_t ld = c.heads * c.head_dim + c.extra_ld, half = c.rot_dim / 2;
    std::vector<float> inv(test::sz(half));
    rope_default_inv_freq(10000.0f, c.rot_dim, inv.data());
    const std::vector<int64_t> pos = rt_positions(1, c.T, 7);
    const VecFl x = test::to_f(test::random_vec(test::sz(c.T * ld), 10 + uint64_t(c.T)));
    const RopeTable tab = rope_table(pos.data(), c.T, 1, nullptr, inv.data(), half, c.scale);
    ASSERT_EQ(tab.T, c.T);
    ASSERT_EQ(tab.half, half);
    VecFl want = x, got = x;
    rope_forward(want.data(), ld, pos.data(), inv.data(), c.T, c.heads, c.head_dim, c.rot_dim, c.scale);
    rope_apply_table(got.data(), ld, tab, c.heads, c.head_dim);
    EXPECT_TRUE(rt_same_bits(got, want))
        << "forward T=" << c.T << " head_dim=" << c.head_dim << " rot=" << c.rot_dim << " max diff "
        << test::max_abs_diff(got, want);
    want = x;
    got = x;
    rope_backward(want.data(), ld, pos.data(), inv.data(), c.T, c.heads, c.head_dim, c.rot_dim, c.scale);
    rope_apply_table_backward(got.data(), ld, tab, c.heads, c.head_dim);
    EXPECT_TRUE(rt_same_bits(got, want)) << "backward T=" << c.T << " head_dim=" << c.head_dim;
    // Three identical streams, whichever each pair picks, are the same table.
    std::vector<int64_t> pos3(pos);
    pos3.insert(pos3.end(), pos.begin(), pos.end());
    pos3.insert(pos3.end(), pos.begin(), pos.end());
    std::vector<int> so(test::sz(half));
    for (int64_t i = 0; i < half; ++i) so[test::sz(i)] = int(i % 3);
    const RopeTable tab3 = rope_table(pos3.data(), c.T, 3, so.data(), inv.data(), half, c.scale);
    EXPECT_EQ(tab3.cos, tab.cos);
    EXPECT_EQ(tab3.sin, tab.sin);
  }
}

TEST(RopeTable, MropeMatchesDoubleReference) {
  for (const std::vector<int>& sections : {std::vector<int>{2, 3, 3}, std::vector<int>{4, 6, 6}}) {
    const std::vector<int> so = rt_stream_of(sections);
    const int64_t half = int64_t(so.size()), head_dim = 2 * half, heads = 3, T = 11,
                  ld = heads * head_dim + 2;
    std::vector<float> inv(test::sz(half));
    rope_default_inv_freq(1000000.0f, head_dim, inv.data());
    const std::vector<int64_t> pos = rt_positions(3, T, 5);
    const float scale = 1.1f;
    const RopeTable tab = rope_table(pos.data(), T, 3, so.data(), inv.data(), half, scale);

    // The table: cos / sin of pos[stream_of[i]][t] * inv_freq[i], in double; and exactly HF's form (the float
    // product, cos in double rounded to float, times the scale in float).
    VecD c(test::sz(T * half)), s(c.size());
    double table_err = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t p = pos[test::sz(so[test::sz(i)] * T + t)];
        const double angle = double(p) * double(inv[test::sz(i)]);
        const size_t k = test::sz(t * half + i);
        c[k] = std::cos(angle) * double(scale);
        s[k] = std::sin(angle) * double(scale);
        table_err =
            std::max({table_err, std::fabs(double(tab.cos[k]) - c[k]), std::fabs(double(tab.sin[k]) - s[k])});
        const float fa = float(p) * inv[test::sz(i)];
        EXPECT_EQ(tab.cos[k], float(std::cos(double(fa))) * scale) << t << " " << i;
        EXPECT_EQ(tab.sin[k], float(std::sin(double(fa))) * scale) << t << " " << i;
      }
    EXPECT_LT(table_err,
              1e-5);  // the float angle (|angle| < 61): ~4e-6 from the exact product, see test_rope.cpp

    const VecD x = test::random_vec(test::sz(T * ld), 21);
    VecD want = x;
    rt_rotate_ref(want.data(), ld, c.data(), s.data(), T, half, heads, head_dim, 1.0);
    VecFl got = test::to_f(x);
    rope_apply_table(got.data(), ld, tab, heads, head_dim);
    const double fwd = test::scaled_err(got, want);
    EXPECT_LT(fwd, 1e-5);
    want = x;
    rt_rotate_ref(want.data(), ld, c.data(), s.data(), T, half, heads, head_dim, -1.0);
    got = test::to_f(x);
    rope_apply_table_backward(got.data(), ld, tab, heads, head_dim);
    const double bwd = test::scaled_err(got, want);
    EXPECT_LT(bwd, 1e-5);
    // The padding between rows is untouched.
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = heads * head_dim; e < ld; ++e)
        EXPECT_EQ(got[test::sz(t * ld + e)], float(x[test::sz(t * ld + e)]));
    std::cout << "[rope table] mrope [" << sections[0] << "," << sections[1] << "," << sections[2]
              << "]: table max err " << table_err << ", forward " << fwd << ", backward " << bwd << "\n";
  }
}

TEST(RopeTable, FromAnglesIsCosSinOfTheAngles) {
  const int64_t T = 6, half = 5;
  const VecFl ang = test::to_f(test::random_vec(test::sz(T * half), 31, -20.0, 20.0));
  const RopeTable tab = rope_table_from_angles(ang.data(), T, half);
  ASSERT_EQ(tab.T, T);
  ASSERT_EQ(tab.half, half);
  for (size_t k = 0; k < ang.size(); ++k) {
    EXPECT_EQ(tab.cos[k], float(std::cos(double(ang[k]))));
    EXPECT_EQ(tab.sin[k], float(std::sin(double(ang[k]))));
  }
}

// The rotation R of a table as a matrix over one (T * ld) buffer, column j = R e_j; with `transpose`, R^T's.
std::vector<VecFl> rt_matrix(const RopeTable& tab, int64_t ld, int64_t heads, int64_t head_dim,
                             bool transpose) {
  const int64_t n = tab.T * ld;
  std::vector<VecFl> cols(test::sz(n));
  for (int64_t j = 0; j < n; ++j) {
    VecFl e(test::sz(n), 0.0f);
    e[test::sz(j)] = 1.0f;
    if (transpose)
      rope_apply_table_backward(e.data(), ld, tab, heads, head_dim);
    else
      rope_apply_table(e.data(), ld, tab, heads, head_dim);
    cols[test::sz(j)] = e;
  }
  return cols;
}

TEST(RopeTable, BackwardIsTheExactTranspose) {
  const std::vector<int> so = rt_stream_of({2, 1, 1});
  const int64_t half = 4, heads = 2, head_dim = 10, T = 5,
                ld = heads * head_dim + 3;  // partial rotary, padded rows
  std::vector<float> inv(test::sz(half));
  rope_default_inv_freq(10000.0f, 2 * half, inv.data());
  const std::vector<int64_t> pos = rt_positions(3, T, 9);
  const RopeTable tab = rope_table(pos.data(), T, 3, so.data(), inv.data(), half, 0.8f);

  // Applied to unit vectors, both give the table's entries themselves: R^T is R transposed bit for bit.
  const std::vector<VecFl> R = rt_matrix(tab, ld, heads, head_dim, false),
                           Rt = rt_matrix(tab, ld, heads, head_dim, true);
  const size_t n = R.size();
  size_t mismatches = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) mismatches += R[j][i] != Rt[i][j];
  EXPECT_EQ(mismatches, 0u);

  // <R x, y> = <x, R^T y> for random x, y (float kernels, double sums): within 1e-6, and within 1e-6 of |x|
  // |y|.
  double worst = 0, worst_abs = 0;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const VecD x = test::random_vec(n, 40 + seed), y = test::random_vec(n, 50 + seed);
    VecFl rx = test::to_f(x), rty = test::to_f(y);
    rope_apply_table(rx.data(), ld, tab, heads, head_dim);
    rope_apply_table_backward(rty.data(), ld, tab, heads, head_dim);
    const double lhs = test::dot(test::to_d(rx), y), rhs = test::dot(x, test::to_d(rty));
    const double rel = std::fabs(lhs - rhs) / std::sqrt(test::dot(x, x) * test::dot(y, y));
    worst = std::max(worst, rel);
    worst_abs = std::max(worst_abs, std::fabs(lhs - rhs));
  }
  EXPECT_LT(worst_abs, 1e-6);
  EXPECT_LT(worst, 1e-6);
  std::cout << "[rope table] |<Rx, y> - <x, R^T y>|: worst " << worst_abs << ", " << worst << " of |x||y|\n";
}

TEST(RopeTable, BackwardMatchesFiniteDifferences) {
  // L(x) = <R x, dy> with R the table's rotation in double (its float cos / sin): the float backward applied
  // to dy is dL/dx. The float forward is checked against the same reference.
  const std::vector<int> so = rt_stream_of({1, 1, 1});
  const int64_t half = 3, heads = 2, head_dim = 8, T = 4, ld = 19;
  std::vector<float> inv(test::sz(half));
  rope_default_inv_freq(10000.0f, 2 * half, inv.data());  // partial rotary: 3 pairs of an 8-wide head
  const std::vector<int64_t> pos = rt_positions(3, T, 4);
  const RopeTable tab = rope_table(pos.data(), T, 3, so.data(), inv.data(), half, 1.3f);
  const VecD c(tab.cos.begin(), tab.cos.end()), s(tab.sin.begin(), tab.sin.end());
  VecD x = test::random_vec(test::sz(T * ld), 61);
  const VecD dy = test::random_vec(x.size(), 62);
  auto loss = [&] {
    VecD y = x;
    rt_rotate_ref(y.data(), ld, c.data(), s.data(), T, half, heads, head_dim, 1.0);
    return test::dot(y, dy);
  };
  VecD want = x;
  rt_rotate_ref(want.data(), ld, c.data(), s.data(), T, half, heads, head_dim, 1.0);
  VecFl fx = test::to_f(x);
  rope_apply_table(fx.data(), ld, tab, heads, head_dim);
  EXPECT_LT(test::scaled_err(fx, want), 1e-6);
  const VecD fd = test::numeric_grad(x, loss);
  VecFl g = test::to_f(dy);
  rope_apply_table_backward(g.data(), ld, tab, heads, head_dim);
  const double err = test::scaled_err(g, fd);
  EXPECT_LT(err, 1e-6);
  std::cout << "[rope table] backward vs central differences: " << err << "\n";
}

TEST(RopeTable, QkvStridesTouchOnlyTheirColumns) {
  // q at column 0 and k at column D of a (T, 3D) qkv buffer, as the rotary vision block applies them.
  const int64_t heads = 2, head_dim = 6, D = heads * head_dim, T = 7;
  for (int64_t half : {int64_t(3), int64_t(2)}) {  // full, then partial rotary
    const VecFl ang = test::to_f(test::random_vec(test::sz(T * half), 70 + uint64_t(half), -4.0, 4.0));
    const RopeTable tab = rope_table_from_angles(ang.data(), T, half);
    const VecFl qkv0 = test::to_f(test::random_vec(test::sz(T * 3 * D), 80));
    VecFl qkv = qkv0;
    rope_apply_table(qkv.data(), 3 * D, tab, heads, head_dim);
    rope_apply_table(qkv.data() + D, 3 * D, tab, heads, head_dim);
    // The same rotation of contiguous copies of q and of k.
    VecFl q(test::sz(T * D)), k(q.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < D; ++e) {
        q[test::sz(t * D + e)] = qkv0[test::sz(t * 3 * D + e)];
        k[test::sz(t * D + e)] = qkv0[test::sz(t * 3 * D + D + e)];
      }
    rope_apply_table(q.data(), D, tab, heads, head_dim);
    rope_apply_table(k.data(), D, tab, heads, head_dim);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < D; ++e) {
        ASSERT_EQ(qkv[test::sz(t * 3 * D + e)], q[test::sz(t * D + e)]) << t << " " << e;
        ASSERT_EQ(qkv[test::sz(t * 3 * D + D + e)], k[test::sz(t * D + e)]) << t << " " << e;
        ASSERT_EQ(qkv[test::sz(t * 3 * D + 2 * D + e)], qkv0[test::sz(t * 3 * D + 2 * D + e)])
            << "v " << t << " " << e;
        if (e % head_dim >= 2 * half) {  // beyond the rotary dims
          ASSERT_EQ(qkv[test::sz(t * 3 * D + e)], qkv0[test::sz(t * 3 * D + e)]);
          ASSERT_EQ(qkv[test::sz(t * 3 * D + D + e)], qkv0[test::sz(t * 3 * D + D + e)]);
        }
      }
    // The backward with the same strides restores the buffer (a rotation: R^T R = I up to rounding) and still
    // leaves v bit-identical.
    rope_apply_table_backward(qkv.data(), 3 * D, tab, heads, head_dim);
    rope_apply_table_backward(qkv.data() + D, 3 * D, tab, heads, head_dim);
    double err = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < 2 * D; ++e)
        err = std::max(
            err, std::fabs(double(qkv[test::sz(t * 3 * D + e)]) - double(qkv0[test::sz(t * 3 * D + e)])));
    EXPECT_LT(err, 1e-6);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 2 * D; e < 3 * D; ++e)
        ASSERT_EQ(qkv[test::sz(t * 3 * D + e)], qkv0[test::sz(t * 3 * D + e)]);
  }
}

TEST(RopeTable, BadArgumentsThrow) {
  const int64_t pos[3] = {0, 1, 2};
  const float inv[2] = {1.0f, 0.5f};
  const int bad_stream[2] = {0, 3};
  EXPECT_THROW(rope_table(pos, 1, 3, bad_stream, inv, 2), Error);  // stream 3 of 3
  const int neg_stream[2] = {-1, 0};
  EXPECT_THROW(rope_table(pos, 1, 3, neg_stream, inv, 2), Error);
  EXPECT_THROW(rope_table(pos, 1, 0, nullptr, inv, 2), Error);  // no stream
  const RopeTable tab = rope_table(pos, 1, 1, nullptr, inv, 2);
  float x[16] = {};
  EXPECT_THROW(rope_apply_table(x, 8, tab, 2, 2), Error);  // 2 pairs do not fit heads of 2
  EXPECT_THROW(rope_apply_table(x, 7, tab, 2, 4), Error);  // ld < n_heads * head_dim
  EXPECT_THROW(rope_apply_table_backward(x, 7, tab, 2, 4), Error);
  EXPECT_NO_THROW(rope_apply_table(x, 8, tab, 2, 4));
}

}  // namespace
}  // namespace rope_table_test
}  // namespace iris::ops
