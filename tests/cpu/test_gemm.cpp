// The matrix-multiply backend against a plain triple loop, in f32 and bf16, with strides, bias and accumulation.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cpu/gemm.h"
#include "cpu/gemv.h"
#include "cpu/threads.h"

using namespace iris;

namespace {

std::vector<float> randv(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(int64_t(g() % 2001) - 1000) / 1000.0f;
  return v;
}

// Runs f once per way of computing bf16 products (gemm.h: oneDNN's bf16 matmul, or bf16 panels widened to f32),
// whatever this CPU's default is.
template <typename F>
void for_each_bf16_path(F&& f) {
  const cpu::Bf16Path saved = cpu::bf16_path();
  for (cpu::Bf16Path p : {cpu::Bf16Path::Native, cpu::Bf16Path::Widen}) {
    cpu::set_bf16_path(p);
    SCOPED_TRACE(p == cpu::Bf16Path::Native ? "bf16 path: native" : "bf16 path: widen");
    f();
  }
  cpu::set_bf16_path(saved);
}

}  // namespace

TEST(Gemm, SgemmMatchesNaive) {
  for (auto [M, N, K] : {std::tuple{1, 7, 5}, {13, 17, 19}, {64, 33, 128}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        auto A = randv(size_t(M * K), 1), B = randv(size_t(K * N), 2), C = randv(size_t(M * N), 3);
        auto ref = C;
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += double(ta ? A[size_t(k * M + i)] : A[size_t(i * K + k)]) *
                                            double(tb ? B[size_t(j * K + k)] : B[size_t(k * N + j)]);
            ref[size_t(i * N + j)] = float(0.5 * s + 2.0 * ref[size_t(i * N + j)]);
          }
        cpu::gemm_f32(ta, tb, M, N, K, 0.5f, A.data(), ta ? M : K, B.data(), tb ? K : N, 2.0f, C.data(), N);
        for (size_t i = 0; i < C.size(); ++i) ASSERT_NEAR(C[i], ref[i], 1e-4) << M << "x" << N << "x" << K;
      }
  }
}

TEST(Gemm, LinearF32AndBf16) {
  for_each_bf16_path([] {
  for (auto prec : {cpu::MatmulPrecision::F32, cpu::MatmulPrecision::BF16}) {
    for (auto [M, N, K] : {std::tuple{1, 64, 32}, {5, 33, 70}, {130, 96, 64}, {9, 600, 1100}}) {
      const int64_t ldx = K + 3, ldy = N + 5;
      auto W = randv(size_t(N * K), 4), x = randv(size_t(M * ldx), 5), b = randv(size_t(N), 6);
      auto y0 = randv(size_t(M * ldy), 7);
      Tensor wt = Tensor::from_vector(W, {N, K});
      cpu::LinearWeight lw(wt, prec);
      for (bool acc : {false, true})
        for (bool bias : {false, true}) {
          auto y = y0;
          lw.forward(x.data(), M, ldx, y.data(), ldy, bias ? b.data() : nullptr, acc);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double s = (acc ? y0[size_t(i * ldy + j)] : 0.0) + (bias ? b[size_t(j)] : 0.0);
              double dot = 0, mag = 0;
              for (int64_t k = 0; k < K; ++k) {
                double xv = x[size_t(i * ldx + k)], wv = W[size_t(j * K + k)];
                if (prec == cpu::MatmulPrecision::BF16) {
                  xv = bf16_to_f32(f32_to_bf16(float(xv)));
                  wv = bf16_to_f32(f32_to_bf16(float(wv)));
                }
                dot += xv * wv;
                mag += std::fabs(xv * wv);
              }
              ASSERT_NEAR(y[size_t(i * ldy + j)], s + dot, 1e-5 * (mag + 1)) << i << "," << j;
            }
          // Padding columns of y are untouched.
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = N; j < ldy; ++j) ASSERT_EQ(y[size_t(i * ldy + j)], y0[size_t(i * ldy + j)]);
        }
    }
  }
  });
}

// Training's dx = dy W, with several panels of W (N large enough that the widening path cuts it), with and
// without accumulation: an f32 weight in f32 (whatever the precision: the master weight is exact), a bf16 weight
// in BF16 precision with dy rounded to bf16, on both bf16 paths.
TEST(Gemm, BackwardInputMatchesPlainLoop) {
  for_each_bf16_path([] {
    for (auto prec : {cpu::MatmulPrecision::F32, cpu::MatmulPrecision::BF16})
      for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 9, 5}, {6, 700, 1000}, {33, 40, 17}}) {
        auto W = randv(size_t(N * K), 21), dy = randv(size_t(M * N), 22), dx0 = randv(size_t(M * K), 23);
        Tensor wt = Tensor::from_vector(W, {N, K});
        if (prec == cpu::MatmulPrecision::BF16) wt = wt.to(DType::BF16);
        cpu::LinearWeight lw(wt, prec);
        for (bool acc : {false, true}) {
          auto dx = dx0;
          lw.backward_input(dy.data(), M, dx.data(), acc);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t k = 0; k < K; ++k) {
              double s = 0, mag = 0;
              for (int64_t j = 0; j < N; ++j) {
                double a = dy[size_t(i * N + j)], b = W[size_t(j * K + k)];
                if (prec == cpu::MatmulPrecision::BF16) {
                  a = bf16_to_f32(f32_to_bf16(float(a)));
                  b = bf16_to_f32(f32_to_bf16(float(b)));
                }
                s += a * b;
                mag += std::fabs(a * b);
              }
              if (acc) s += dx0[size_t(i * K + k)];
              ASSERT_NEAR(dx[size_t(i * K + k)], s, 1e-5 * (mag + 1)) << M << "x" << N << "x" << K << " " << i;
            }
        }
      }
  });
}

// Decode-sized products (M <= kGemvMaxRows) take the streaming kernels of gemv.h: every row count, K with and
// without a partial vector, N not a multiple of the row block, weights given as f32, bf16 (read in place) and f16,
// on one and two threads; after an in-place update of an f32 weight, repack() refreshes what they read.
TEST(Gemm, DecodeRowsMatchPlainLoop) {
  for_each_bf16_path([] {
  auto check = [](const cpu::LinearWeight& lw, const std::vector<float>& W, int64_t M, int64_t N, int64_t K,
                  bool round_bf16) {
    const int64_t ldx = K + 2, ldy = N + 3;
    auto x = randv(size_t(M * ldx), 11), b = randv(size_t(N), 12), y0 = randv(size_t(M * ldy), 13);
    for (bool acc : {false, true}) {
      auto y = y0;
      lw.forward(x.data(), M, ldx, y.data(), ldy, b.data(), acc);
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          double dot = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            double xv = x[size_t(i * ldx + k)], wv = W[size_t(j * K + k)];
            if (round_bf16) xv = bf16_to_f32(f32_to_bf16(float(xv)));
            dot += xv * wv;
            mag += std::fabs(xv * wv);
          }
          double want = dot + b[size_t(j)] + (acc ? y0[size_t(i * ldy + j)] : 0.0);
          ASSERT_NEAR(y[size_t(i * ldy + j)], want, 2e-6 * (mag + 1)) << M << "x" << N << "x" << K << " " << i << ","
                                                                       << j;
        }
        for (int64_t j = N; j < ldy; ++j) ASSERT_EQ(y[size_t(i * ldy + j)], y0[size_t(i * ldy + j)]);
      }
    }
  };
  for (int threads : {1, 2}) {
    cpu::ScopedThreads st(threads);
    for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 1}, {7, 16}, {37, 70}, {130, 200}}) {
      for (int64_t M = 1; M <= cpu::kGemvMaxRows; ++M) {
        auto W = randv(size_t(N * K), uint64_t(N * 31 + K));
        // bf16 weight (the checkpoint's bytes, read in place), bf16 arithmetic.
        Tensor wb = Tensor::from_vector(W, {N, K}).to(DType::BF16);
        std::vector<float> Wr(W.size());
        for (size_t i = 0; i < W.size(); ++i) Wr[i] = bf16_to_f32(static_cast<const uint16_t*>(wb.raw())[i]);
        check(cpu::LinearWeight(wb, cpu::MatmulPrecision::BF16), Wr, M, N, K, true);
        // f16 weight computed in f32 (a converted copy) and in bf16.
        Tensor wh = Tensor::from_vector(W, {N, K}).to(DType::F16);
        std::vector<float> Wh(W.size());
        for (size_t i = 0; i < W.size(); ++i) Wh[i] = f16_to_f32(static_cast<const uint16_t*>(wh.raw())[i]);
        check(cpu::LinearWeight(wh, cpu::MatmulPrecision::F32), Wh, M, N, K, false);
        std::vector<float> Whb(W.size());
        for (size_t i = 0; i < W.size(); ++i) Whb[i] = bf16_to_f32(f32_to_bf16(Wh[i]));
        check(cpu::LinearWeight(wh, cpu::MatmulPrecision::BF16), Whb, M, N, K, true);
        // f32 weight in f32 (in place), and in bf16 after an in-place update and repack().
        Tensor wf = Tensor::from_vector(W, {N, K});
        check(cpu::LinearWeight(wf, cpu::MatmulPrecision::F32), W, M, N, K, false);
        cpu::LinearWeight lw(wf, cpu::MatmulPrecision::BF16);
        for (int64_t i = 0; i < wf.numel(); ++i) wf.data<float>()[i] *= -0.5f;
        lw.repack();
        std::vector<float> Wu(W.size());
        for (size_t i = 0; i < W.size(); ++i) Wu[i] = bf16_to_f32(f32_to_bf16(wf.data<float>()[i]));
        check(lw, Wu, M, N, K, true);
      }
    }
  }
  });
}

TEST(Threads, ParallelForCoversRangeOnce) {
  for (int64_t n : {1, 2, 7, 1000}) {
    std::vector<int> hit(size_t(n), 0);
    cpu::parallel_for(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hit[size_t(i)]++;
    });
    for (int h : hit) ASSERT_EQ(h, 1);
  }
}
