// Products of a few activation rows with a plain row-major weight (decode): y(M,N) = x(M,K) W(N,K)^T, M small.
// Decode streams every weight once per token and does almost no arithmetic per weight byte, so these kernels
// are written to read W once, sequentially, at the memory's speed: each weight row is converted (bf16 -> f32)
// in registers and multiplied with all M activation rows at once. LinearWeight uses them for M <= kGemvMaxRows.
#pragma once
#include <cstdint>

namespace iris::cpu {

constexpr int64_t kGemvMaxRows = 4;

// W bf16 (N, K) row-major. x is rounded to bf16 first (the arithmetic of the bf16 matmul path: exact bf16
// products accumulated in f32). y = x W^T (+ bias) (+ y if accumulate). Runs on num_threads() over N.
void gemv_bf16(const float* x, int64_t M, int64_t ldx, const uint16_t* w, int64_t N, int64_t K, float* y, int64_t ldy,
               const float* bias, bool accumulate);
// The same with an f32 weight, in f32.
void gemv_f32(const float* x, int64_t M, int64_t ldx, const float* w, int64_t N, int64_t K, float* y, int64_t ldy,
              const float* bias, bool accumulate);

}  // namespace iris::cpu
