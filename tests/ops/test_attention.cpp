// Attention: the float kernels (tiled and few-rows paths, key splitting, backward stripes) against the double
// reference over causal / non-causal, GQA and MQA, q_offset > 0, Tq != Tk, strided rows and odd head dims;
// the reference backward against finite differences; results under several thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "cpu/threads.h"
#include "ops/attention.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

struct Case {
  int64_t Tq, Tk, n_head, n_kv, hd;
  bool causal;
  int64_t q_offset, pad;  // pad: extra floats at the end of every row (strided layouts)
  double scale;           // 0: 1/sqrt(hd)
  int64_t window = 0;     // sliding window (0: none)
  std::string name() const {
    return "Tq=" + std::to_string(Tq) + " Tk=" + std::to_string(Tk) + " heads=" + std::to_string(n_head) + "/" +
           std::to_string(n_kv) + " hd=" + std::to_string(hd) + (causal ? " causal" : "") +
           " q_offset=" + std::to_string(q_offset) + " pad=" + std::to_string(pad) +
           (window ? " window=" + std::to_string(window) : "");
  }
};

const Case kCases[] = {
    {1, 1, 1, 1, 4, false, 0, 0, 0},       // smallest
    {5, 7, 4, 2, 8, true, 2, 3, 0},        // few-rows path, GQA, offset, strided
    {20, 20, 4, 2, 16, true, 0, 0, 0},     // tiled, GQA, causal square
    {100, 130, 4, 2, 64, false, 0, 5, 0},  // tiled, several lane blocks and key tiles, strided
    {70, 150, 2, 2, 80, true, 80, 1, 0},   // causal with offset (a KV cache), head dim 64 + 16
    {33, 33, 3, 3, 40, false, 0, 0, 1.0},  // MHA, partial vectors, large scores (scale 1)
    {16, 5, 1, 1, 8, true, 0, 0, 0},       // more queries than keys
    {1, 600, 8, 2, 128, true, 599, 0, 0},  // decode, GQA 4:1
    {3, 1100, 4, 1, 72, true, 1097, 2, 0}, // few-rows MQA with key splits, head dim 64 + 8
    {1, 77, 2, 2, 64, false, 0, 0, 0},     // decode, MHA, odd key count
    {2, 2100, 2, 2, 20, false, 0, 0, 0},   // few-rows, several key tiles per split
    // Sliding windows: smaller than a key tile, spanning tiles, larger than the context, with an offset.
    {20, 20, 4, 2, 16, true, 0, 0, 0, 5},       // tiled, window 5
    {100, 130, 4, 2, 64, true, 30, 5, 0, 70},   // tiled, several lane blocks, window across key tiles
    {70, 150, 2, 2, 80, true, 80, 1, 0, 1},     // window 1: each query sees only itself
    {16, 16, 1, 1, 8, true, 0, 0, 0, 100},      // window longer than the sequence: plain causal
    {1, 600, 8, 2, 128, true, 599, 0, 0, 64},   // decode, GQA 4:1, window 64
    {3, 1100, 4, 1, 72, true, 1097, 2, 0, 700}, // few-rows MQA, key splits inside the window
    {5, 7, 4, 2, 8, true, 2, 3, 0, 3},          // few-rows, GQA, offset, strided
};

struct Data {
  int64_t ldq, ldk, ldv, ldo;
  VecD q, k, v, dout, dk0, dv0;
};

Data make_data(const Case& c, uint64_t seed) {
  Data d;
  d.ldq = c.n_head * c.hd + c.pad;
  d.ldo = c.n_head * c.hd + 2 * c.pad;
  d.ldk = c.n_kv * c.hd + c.pad;
  d.ldv = c.n_kv * c.hd + 3 * c.pad;
  d.q = test::random_vec(test::sz(c.Tq * d.ldq), seed);
  d.k = test::random_vec(test::sz(c.Tk * d.ldk), seed + 1);
  d.v = test::random_vec(test::sz(c.Tk * d.ldv), seed + 2);
  d.dout = test::random_vec(test::sz(c.Tq * d.ldo), seed + 3);
  d.dk0 = test::random_vec(test::sz(c.Tk * d.ldk), seed + 4);
  d.dv0 = test::random_vec(test::sz(c.Tk * d.ldv), seed + 5);
  return d;
}

double scale_of(const Case& c) { return c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.hd)); }

// Only the row entries (not the padding) are compared.
double strided_err(const VecFl& got, const VecD& want, int64_t rows, int64_t ld, int64_t width) {
  VecFl g;
  VecD w;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) {
      g.push_back(got[test::sz(r * ld + i)]);
      w.push_back(want[test::sz(r * ld + i)]);
    }
  return test::scaled_err(g, w);
}

void check_case(const Case& c) {
  SCOPED_TRACE(c.name());
  const Data d = make_data(c, 17 + uint64_t(c.Tq * 31 + c.Tk));
  const double scale = scale_of(c);
  // Reference in double.
  VecD out(test::sz(c.Tq * d.ldo), 0.0), lse(test::sz(c.n_head * c.Tq));
  ref::attention_forward(d.q.data(), d.ldq, d.k.data(), d.ldk, d.v.data(), d.ldv, out.data(), d.ldo, c.Tq, c.Tk,
                         c.n_head, c.n_kv, c.hd, scale, c.causal, c.q_offset, lse.data(), c.window);
  VecD dq(test::sz(c.Tq * d.ldq), 0.0), dk = d.dk0, dv = d.dv0;
  ref::attention_backward(d.q.data(), d.ldq, d.k.data(), d.ldk, d.v.data(), d.ldv, out.data(), d.ldo, lse.data(),
                          d.dout.data(), d.ldo, dq.data(), d.ldq, dk.data(), d.ldk, dv.data(), d.ldv, c.Tq, c.Tk,
                          c.n_head, c.n_kv, c.hd, scale, c.causal, c.q_offset, c.window);

  // Float kernels; outputs start as NaN where they must be overwritten.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  VecFl qf = test::to_f(d.q), kf = test::to_f(d.k), vf = test::to_f(d.v), dof = test::to_f(d.dout);
  VecFl outf(out.size(), nan), lsef(lse.size(), nan);
  attention_forward(qf.data(), d.ldq, kf.data(), d.ldk, vf.data(), d.ldv, outf.data(), d.ldo, c.Tq, c.Tk, c.n_head,
                    c.n_kv, c.hd, float(scale), c.causal, c.q_offset, lsef.data(), c.window);
  EXPECT_LT(strided_err(outf, out, c.Tq, d.ldo, c.n_head * c.hd), 1e-5);
  EXPECT_LT(test::scaled_err(lsef, lse), 1e-5);
  // Padding between rows is left alone.
  if (c.pad > 0) {
    EXPECT_TRUE(std::isnan(outf[test::sz(c.n_head * c.hd)]));
  }

  VecFl dqf(dq.size(), nan), dkf = test::to_f(d.dk0), dvf = test::to_f(d.dv0);
  attention_backward(qf.data(), d.ldq, kf.data(), d.ldk, vf.data(), d.ldv, outf.data(), d.ldo, lsef.data(),
                     dof.data(), d.ldo, dqf.data(), d.ldq, dkf.data(), d.ldk, dvf.data(), d.ldv, c.Tq, c.Tk, c.n_head,
                     c.n_kv, c.hd, float(scale), c.causal, c.q_offset, c.window);
  EXPECT_LT(strided_err(dqf, dq, c.Tq, d.ldq, c.n_head * c.hd), 2e-5);
  EXPECT_LT(strided_err(dkf, dk, c.Tk, d.ldk, c.n_kv * c.hd), 2e-5);
  EXPECT_LT(strided_err(dvf, dv, c.Tk, d.ldv, c.n_kv * c.hd), 2e-5);
  // The forward without lse gives the same output.
  VecFl out2(out.size(), nan);
  attention_forward(qf.data(), d.ldq, kf.data(), d.ldk, vf.data(), d.ldv, out2.data(), d.ldo, c.Tq, c.Tk, c.n_head,
                    c.n_kv, c.hd, float(scale), c.causal, c.q_offset, nullptr, c.window);
  EXPECT_LT(strided_err(out2, out, c.Tq, d.ldo, c.n_head * c.hd), 1e-5);
}

TEST(OpsAttention, MatchesReference) {
  for (const Case& c : kCases) check_case(c);
}

// Key splitting (few-rows path) and dK/dV stripes (backward) depend on the thread count: all must agree.
TEST(OpsAttention, MatchesReferenceUnderThreadCounts) {
  const int saved = cpu::num_threads();
  for (int t : {1, 3, 4}) {
    cpu::set_num_threads(t);
    SCOPED_TRACE("threads=" + std::to_string(t));
    check_case({3, 1100, 4, 1, 72, true, 1097, 2, 0});
    check_case({1, 2000, 2, 1, 64, false, 0, 0, 0});
    check_case({40, 90, 2, 1, 24, true, 50, 1, 0});
    check_case({3, 1100, 4, 1, 72, true, 1097, 2, 0, 700});
    check_case({40, 90, 2, 1, 24, true, 50, 1, 0, 33});
  }
  cpu::set_num_threads(saved);
}

TEST(OpsAttention, ReferenceBackwardMatchesFiniteDifferences) {
  const Case cases[] = {{3, 5, 4, 2, 3, true, 2, 1, 0},
                        {4, 3, 2, 1, 5, false, 0, 0, 0.7},
                        {4, 2, 2, 2, 2, true, 0, 0, 0},
                        {5, 7, 2, 1, 3, true, 2, 0, 0, 3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name());
    Data d = make_data(c, 5);
    const double scale = scale_of(c);
    VecD out(test::sz(c.Tq * d.ldo), 0.0), lse(test::sz(c.n_head * c.Tq));
    auto forward = [&] {
      ref::attention_forward(d.q.data(), d.ldq, d.k.data(), d.ldk, d.v.data(), d.ldv, out.data(), d.ldo, c.Tq, c.Tk,
                             c.n_head, c.n_kv, c.hd, scale, c.causal, c.q_offset, lse.data(), c.window);
    };
    auto loss = [&] {
      forward();
      return test::dot(d.dout, out);
    };
    VecD fq = test::numeric_grad(d.q, loss), fk = test::numeric_grad(d.k, loss), fv = test::numeric_grad(d.v, loss);
    forward();
    VecD dq(d.q.size(), 0.0), dk(d.k.size(), 0.0), dv(d.v.size(), 0.0);
    ref::attention_backward(d.q.data(), d.ldq, d.k.data(), d.ldk, d.v.data(), d.ldv, out.data(), d.ldo, lse.data(),
                            d.dout.data(), d.ldo, dq.data(), d.ldq, dk.data(), d.ldk, dv.data(), d.ldv, c.Tq, c.Tk,
                            c.n_head, c.n_kv, c.hd, scale, c.causal, c.q_offset, c.window);
    EXPECT_LT(test::scaled_err(dq, fq), 1e-7);
    EXPECT_LT(test::scaled_err(dk, fk), 1e-7);
    EXPECT_LT(test::scaled_err(dv, fv), 1e-7);
  }
}

// Attention over a KV cache, one query chunk at a time, equals one causal call over all queries.
TEST(OpsAttention, ChunkedQueriesMatchOneCall) {
  const int64_t T = 50, H = 4, KV = 2, hd = 32;
  VecFl q = test::to_f(test::random_vec(test::sz(T * H * hd), 1)), k = test::to_f(test::random_vec(test::sz(T * KV * hd), 2));
  VecFl v = test::to_f(test::random_vec(test::sz(T * KV * hd), 3));
  VecFl full(q.size()), chunked(q.size());
  const float scale = 0.2f;
  attention_forward(q.data(), H * hd, k.data(), KV * hd, v.data(), KV * hd, full.data(), H * hd, T, T, H, KV, hd, scale,
                    true, 0, nullptr);
  for (int64_t s = 0; s < T;) {
    const int64_t n = std::min<int64_t>(s < 20 ? 20 : 1, T - s);  // a prefill chunk, then decode steps
    attention_forward(q.data() + s * H * hd, H * hd, k.data(), KV * hd, v.data(), KV * hd, chunked.data() + s * H * hd,
                      H * hd, n, s + n, H, KV, hd, scale, true, s, nullptr);
    s += n;
  }
  EXPECT_LT(test::max_abs_diff(full, chunked), 2e-6);
  // The same with a sliding window, and a window reaching back over every key is plain causal attention.
  VecFl wfull(q.size()), wchunked(q.size()), wide(q.size());
  attention_forward(q.data(), H * hd, k.data(), KV * hd, v.data(), KV * hd, wfull.data(), H * hd, T, T, H, KV, hd, scale,
                    true, 0, nullptr, 7);
  for (int64_t s = 0; s < T;) {
    const int64_t n = std::min<int64_t>(s < 20 ? 20 : 1, T - s);
    attention_forward(q.data() + s * H * hd, H * hd, k.data(), KV * hd, v.data(), KV * hd, wchunked.data() + s * H * hd,
                      H * hd, n, s + n, H, KV, hd, scale, true, s, nullptr, 7);
    s += n;
  }
  EXPECT_LT(test::max_abs_diff(wfull, wchunked), 2e-6);
  EXPECT_GT(test::max_abs_diff(wfull, full), 1e-3);
  attention_forward(q.data(), H * hd, k.data(), KV * hd, v.data(), KV * hd, wide.data(), H * hd, T, T, H, KV, hd, scale,
                    true, 0, nullptr, T);
  EXPECT_EQ(test::max_abs_diff(wide, full), 0.0);
}

TEST(OpsAttention, BadArgumentsThrow) {
  float x[64] = {};
  EXPECT_THROW(attention_forward(x, 8, x, 8, x, 8, x, 8, 1, 1, 3, 2, 4, 1.0f, false, 0, nullptr), Error);  // 3 % 2
  EXPECT_THROW(attention_forward(x, 4, x, 8, x, 8, x, 8, 1, 1, 2, 2, 4, 1.0f, false, 0, nullptr), Error);  // ldq
  EXPECT_THROW(attention_forward(x, 8, x, 8, x, 8, x, 8, 1, 0, 2, 2, 4, 1.0f, false, 0, nullptr), Error);  // Tk 0
  EXPECT_THROW(attention_forward(x, 8, x, 8, x, 8, x, 8, 1, 1, 2, 2, 4, 1.0f, true, -1, nullptr), Error);  // offset
  EXPECT_THROW(attention_forward(x, 8, x, 8, x, 8, x, 8, 1, 1, 2, 2, 4, 1.0f, false, 0, nullptr, 4), Error);  // window
  EXPECT_THROW(attention_forward(x, 8, x, 8, x, 8, x, 8, 1, 1, 2, 2, 4, 1.0f, true, 0, nullptr, -1), Error);
}

}  // namespace
}  // namespace iris::ops
