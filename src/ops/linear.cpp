// Linear layer: three gemm calls (forward, input gradient, weight gradient), a bias add and a column sum.
#include "ops/linear.h"

#include "cpu/gemm.h"
#include "ops/elementwise.h"
#include "tensor/error.h"

namespace iris::ops {

void linear_forward(const float* x, const float* W, const float* b, float* y, int64_t M, int64_t K, int64_t N) {
  IRIS_CHECK(M >= 0 && K > 0 && N > 0, "linear: bad shape M=", M, " K=", K, " N=", N);
  if (M == 0) return;
  cpu::gemm_f32(false, true, M, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
  if (b) add_bias_rows(y, b, M, N);  // after the product: beta = 0 lets gemm skip reading y
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
