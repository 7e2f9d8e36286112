// The matrix-multiply backend against a plain triple loop, in f32 and bf16, with strides, bias and accumulation.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cpu/gemm.h"
#include "cpu/threads.h"

using namespace iris;

namespace {

std::vector<float> randv(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(int64_t(g() % 2001) - 1000) / 1000.0f;
  return v;
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
  for (auto prec : {cpu::MatmulPrecision::F32, cpu::MatmulPrecision::BF16}) {
    for (auto [M, N, K] : {std::tuple{1, 64, 32}, {5, 33, 70}, {130, 96, 64}}) {
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
