// Linear layer: three gemm calls (forward, input gradient, weight gradient) and a column sum for the bias.
#include "ops/linear.h"

#include "cpu/gemm.h"
#include "ops/elementwise.h"
#include "tensor/error.h"

namespace iris::ops {

void linear_forward(const float* x, const float* W, const float* b, float* y, int64_t M, int64_t K, int64_t N) {
  IRIS_CHECK(M >= 0 && K > 0 && N > 0, "linear: bad shape M=", M, " K=", K, " N=", N);
  if (M == 0) return;
  if (b) {
    // Seed y with the bias rows and let the product accumulate onto them (beta = 1).
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] = b[n];
  }
  cpu::gemm_f32(false, true, M, N, K, 1.0f, x, K, W, K, b ? 1.0f : 0.0f, y, N);
}

void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int64_t M,
                     int64_t K, int64_t N, bool accumulate_dx) {
  IRIS_CHECK(M >= 0 && K > 0 && N > 0, "linear_backward: bad shape M=", M, " K=", K, " N=", N);
  if (M == 0) return;
  if (dx) cpu::gemm_f32(false, false, M, K, N, 1.0f, dy, N, W, K, accumulate_dx ? 1.0f : 0.0f, dx, K);
  if (dW) cpu::gemm_f32(true, false, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
  if (db) sum_rows_accumulate(dy, db, M, N);
}

}  // namespace iris::ops
