// oneDNN implementation of the matrix-multiply backend.
#include "cpu/gemm.h"

#include <oneapi/dnnl/dnnl.h>

#include <vector>

#include "cpu/threads.h"

namespace iris::cpu {

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  IRIS_ASSERT(st == dnnl_success);
}

struct LinearWeight::Impl {
  std::vector<float> f32;  // converted copy when the stored weight is not f32
};

LinearWeight::LinearWeight(Tensor w, MatmulPrecision precision) : w_(std::move(w)), precision_(precision) {
  IRIS_CHECK(w_.ndim() == 2, "linear weight must be 2-d, got ", shape_str(w_.shape()));
  impl_ = std::make_unique<Impl>();
  if (w_.dtype() != DType::F32) {
    Tensor f = w_.to(DType::F32);
    impl_->f32.assign(f.data<float>(), f.data<float>() + f.numel());
  }
}

LinearWeight::~LinearWeight() = default;
LinearWeight::LinearWeight(LinearWeight&&) noexcept = default;
LinearWeight& LinearWeight::operator=(LinearWeight&&) noexcept = default;

void LinearWeight::forward(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, const float* bias,
                           bool accumulate) const {
  const int64_t N = out_features(), K = in_features();
  const float* W = impl_->f32.empty() ? w_.data<float>() : impl_->f32.data();
  if (bias) {
    if (accumulate) {
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) y[i * ldy + j] += bias[j];
    } else {
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) y[i * ldy + j] = bias[j];
    }
  }
  gemm_f32(false, true, M, N, K, 1.0f, x, ldx, W, K, (bias || accumulate) ? 1.0f : 0.0f, y, ldy);
}

}  // namespace iris::cpu
