// Decode products: see gemv.h. One kernel body per weight type, with AVX-512 (16 lanes, masked tails) when the
// compiler targets it and plain loops otherwise. Work is split over the output features N (rows of W), so each
// thread streams a contiguous part of the weight.
#include "cpu/gemv.h"

#include <algorithm>
#include <vector>

#include "cpu/threads.h"
#include "tensor/dtype.h"
#include "tensor/error.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define IRIS_GEMV_AVX512 1
#else
#define IRIS_GEMV_AVX512 0
#endif

namespace iris::cpu {
namespace {

// Rows of W handled together: each activation vector loaded is used for RB rows.
constexpr int RB = 4;
// How many blocks ahead dot_block prefetches (1 and 2 measured best on the Qwen2-1.5B decode stack).
constexpr int kAhead = 2;

#if IRIS_GEMV_AVX512

// GCC 12's unmasked forms of these start from an undefined register, which trips -Wuninitialized; the all-lanes
// maskz forms compile to the same instructions.
inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, h), 16));
}
inline __m512 load_w(const uint16_t* p) { return widen_bf16(_mm256_loadu_si256((const __m256i*)p)); }
inline __m512 load_w_n(const uint16_t* p, __mmask16 m) { return widen_bf16(_mm256_maskz_loadu_epi16(m, p)); }
inline __m512 load_w(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_w_n(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }

inline float hsum(__m512 a) {
  __m256 s8 = _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(a), 0)),
                            _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(a), 1)));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// dot products of R consecutive weight rows (from w, row stride K) with MR activation rows (x, stride K):
// out[r * MR + m]. The R rows are read as R interleaved streams, too short for the hardware prefetcher to ramp up
// (a few KB each), so the block reads a later block into cache as it goes: each step prefetches as many bytes of
// the block kAhead blocks on (from `next` up to `next_end`) as it consumes of this one.
template <int R, int MR, typename W>
inline void dot_block(const float* x, const W* w, int64_t K, float* out, const W* next = nullptr,
                      const W* next_end = nullptr) {
  __m512 acc[R][MR];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MR; ++m) acc[r][m] = _mm512_setzero_ps();
  const char* pf = reinterpret_cast<const char*>(next);
  const char* pf_end = reinterpret_cast<const char*>(next_end);
  constexpr int kStepBytes = R * 16 * int(sizeof(W));
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    if (pf < pf_end) {
      for (int b = 0; b < kStepBytes; b += 64) _mm_prefetch(pf + b, _MM_HINT_T1);
      pf += kStepBytes;
    }
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_w(w + r * K + k);
    for (int m = 0; m < MR; ++m) {
      __m512 xv = _mm512_loadu_ps(x + m * K + k);
      for (int r = 0; r < R; ++r) acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
    }
  }
  if (k < K) {
    __mmask16 mask = __mmask16((1u << (K - k)) - 1u);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_w_n(w + r * K + k, mask);
    for (int m = 0; m < MR; ++m) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * K + k);
      for (int r = 0; r < R; ++r) acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MR; ++m) out[r * MR + m] = hsum(acc[r][m]);
}

#else

inline float wval(uint16_t v) { return bf16_to_f32(v); }
inline float wval(float v) { return v; }

template <int R, int MR, typename W>
inline void dot_block(const float* x, const W* w, int64_t K, float* out, const W* = nullptr, const W* = nullptr) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MR; ++m) {
      float s = 0;
      for (int64_t k = 0; k < K; ++k) s += wval(w[r * K + k]) * x[m * K + k];
      out[r * MR + m] = s;
    }
}

#endif

template <int MR, typename W>
void rows(const float* x, const W* w, int64_t K, int64_t n0, int64_t n1, float* y, int64_t ldy, const float* bias,
          bool accumulate) {
  float out[RB * MR];
  auto put = [&](int64_t n, int R) {
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MR; ++m) {
        float v = out[r * MR + m] + (bias ? bias[n + r] : 0.0f);
        float& d = y[m * ldy + n + r];
        d = accumulate ? d + v : v;
      }
  };
  int64_t n = n0;
#if IRIS_GEMV_AVX512
  // The first block is read cold: ask for it (and the one after) at once rather than line by line.
  {
    const char* p = reinterpret_cast<const char*>(w + n0 * K);
    const char* e = reinterpret_cast<const char*>(w + std::min(n1, n0 + kAhead * RB) * K);
    for (; p < e; p += 64) _mm_prefetch(p, _MM_HINT_T1);
  }
#endif
  for (; n + RB <= n1; n += RB) {
    dot_block<RB, MR>(x, w + n * K, K, out, w + (n + kAhead * RB) * K, w + n1 * K);
    put(n, RB);
  }
  for (; n < n1; ++n) {
    dot_block<1, MR>(x, w + n * K, K, out);
    put(n, 1);
  }
}

template <typename W>
void gemv(const float* x, int64_t M, int64_t K, const W* w, int64_t N, float* y, int64_t ldy, const float* bias,
          bool accumulate) {
  // Chunks of whole RB-row blocks, at least 64 rows (a few hundred KB of weight) per thread.
  const int64_t blocks = (N + RB - 1) / RB;
  parallel_for(blocks, 16, [&](int64_t b, int64_t e) {
    int64_t n0 = b * RB, n1 = std::min(N, e * RB);
    switch (M) {
      case 1: rows<1>(x, w, K, n0, n1, y, ldy, bias, accumulate); break;
      case 2: rows<2>(x, w, K, n0, n1, y, ldy, bias, accumulate); break;
      case 3: rows<3>(x, w, K, n0, n1, y, ldy, bias, accumulate); break;
      default: rows<4>(x, w, K, n0, n1, y, ldy, bias, accumulate); break;
    }
  });
}

}  // namespace

void gemv_bf16(const float* x, int64_t M, int64_t ldx, const uint16_t* w, int64_t N, int64_t K, float* y, int64_t ldy,
               const float* bias, bool accumulate) {
  IRIS_CHECK(M >= 1 && M <= kGemvMaxRows, "gemv: ", M, " rows (at most ", kGemvMaxRows, ")");
  // Activations rounded to bf16 and held contiguously (a few KB): the product of two bf16 values is exact in f32.
  std::vector<float> xr(size_t(M * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xr[size_t(m * K + k)] = bf16_to_f32(f32_to_bf16(x[m * ldx + k]));
  gemv(xr.data(), M, K, w, N, y, ldy, bias, accumulate);
}

void gemv_f32(const float* x, int64_t M, int64_t ldx, const float* w, int64_t N, int64_t K, float* y, int64_t ldy,
              const float* bias, bool accumulate) {
  IRIS_CHECK(M >= 1 && M <= kGemvMaxRows, "gemv: ", M, " rows (at most ", kGemvMaxRows, ")");
  if (ldx == K) {
    gemv(x, M, K, w, N, y, ldy, bias, accumulate);
    return;
  }
  std::vector<float> xc(size_t(M * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xc[size_t(m * K + k)] = x[m * ldx + k];
  gemv(xc.data(), M, K, w, N, y, ldy, bias, accumulate);
}

}  // namespace iris::cpu
