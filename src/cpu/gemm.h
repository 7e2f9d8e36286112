// The matrix-multiply backend: every matrix product in iris goes through this interface, so another backend
// (CUDA) can slot in later without touching models. CPU implementation: oneDNN for prefill-sized products, iris's
// own streaming kernel for decode-sized ones (cpu/gemv.h).
#pragma once
#include <cstdint>
#include <memory>

#include "tensor/tensor.h"

namespace iris::cpu {

// C(M,N) = alpha * op(A) * op(B) + beta * C; all row-major f32 with leading dimensions (like BLAS sgemm with
// row-major storage). op(A) is (M,K): A is (M,K) with lda >= K, or (K,M) with lda >= M when trans_a.
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Precision of the arithmetic of a linear layer's product (accumulation is always f32).
enum class MatmulPrecision { F32, BF16 };

// How BF16 products are computed. Both give bf16 x bf16 products accumulated in f32 (activations are rounded to
// bf16 first); they differ in speed and memory:
//  - Native: oneDNN's bf16 matmul on a packed copy of the weight (fast where the CPU has bf16 dot-product
//    instructions, AVX512_BF16 or AMX; oneDNN emulates them elsewhere, at about a quarter of the f32 rate);
//  - Widen: the plain bf16 weight is widened to f32 a panel of rows at a time and multiplied by the f32 GEMM
//    (bf16 x bf16 products are exact in f32, so this is the same arithmetic), no packed copy.
// The default is Native where the CPU has bf16 instructions, Widen elsewhere; the environment variable
// IRIS_BF16_MATMUL=native|widen overrides it. Applies to LinearWeights made after the call.
enum class Bf16Path { Native, Widen };
bool cpu_has_bf16_instructions();
Bf16Path bf16_path();
void set_bf16_path(Bf16Path p);

// A linear layer's weight W (N=out, K=in), as Hugging Face stores it, prepared for y = x W^T + b.
// The weight may be f32 (read from the checkpoint mapping as stored), or bf16/f16; with BF16 precision the
// weight is converted to bf16 once and activations are converted per call. Packing for speed is internal.
class LinearWeight {
 public:
  LinearWeight();
  LinearWeight(Tensor w, MatmulPrecision precision);
  ~LinearWeight();
  LinearWeight(LinearWeight&&) noexcept;
  LinearWeight& operator=(LinearWeight&&) noexcept;

  bool defined() const { return w_.defined(); }
  int64_t out_features() const { return w_.defined() ? w_.dim(0) : 0; }
  int64_t in_features() const { return w_.defined() ? w_.dim(1) : 0; }
  const Tensor& tensor() const { return w_; }  // the weight as given, (N, K)
  MatmulPrecision precision() const { return precision_; }

  // y(M,N) = x(M,K) W^T (+ bias(N)) (+ y if accumulate). x and y are row-major with the given leading dims.
  void forward(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, const float* bias = nullptr,
               bool accumulate = false) const;
  // Training, backward through the layer: dx(M,K) = dy(M,N) W (+ dx if accumulate), row-major, contiguous rows.
  // In the precision of the forward: f32 weights in f32; bf16 weights with dy converted to bf16.
  void backward_input(const float* dy, int64_t M, float* dx, bool accumulate = false) const;
  // After the (owned, f32) weight tensor was updated in place: refresh the packed bf16 copy (no-op in f32,
  // where the weight is read in place).
  void repack();

  struct Impl;

 private:
  Tensor w_;
  MatmulPrecision precision_ = MatmulPrecision::F32;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iris::cpu
