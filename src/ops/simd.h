// Internal to src/ops: a 16-lane float vector with AVX-512 intrinsics (when the compiler targets AVX-512F)
// and a plain-array fallback with the same interface, so each kernel is written once. Also the vector math
// the kernels need (exp, exp2, erfc, sigmoid), accurate to ~1e-7 relative, with masked tails (load_n/store_n)
// so that the last partial vector of a row goes through the same code as the rest.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#define IRIS_OPS_AVX512 1
#else
#define IRIS_OPS_AVX512 0
#endif

namespace iris::ops::simd {

constexpr int kLanes = 16;

#if IRIS_OPS_AVX512

struct VecF {
  __m512 v;
};
using Mask = __mmask16;
// GCC 12's unmasked max/min/scalef/roundscale intrinsics start from _mm512_undefined_ps(), which trips
// -Wuninitialized under -Werror; the all-lanes maskz forms compile to the same instructions.
constexpr Mask kAll = 0xFFFF;

inline Mask tail_mask(int n) { return Mask((1u << n) - 1u); }  // n in [0, 16]
inline VecF zero() { return {_mm512_setzero_ps()}; }
inline VecF set1(float a) { return {_mm512_set1_ps(a)}; }
inline VecF load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline VecF load_n(const float* p, int n) { return {_mm512_maskz_loadu_ps(tail_mask(n), p)}; }
inline void store(float* p, VecF a) { _mm512_storeu_ps(p, a.v); }
inline void store_n(float* p, VecF a, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), a.v); }

inline VecF operator+(VecF a, VecF b) { return {_mm512_add_ps(a.v, b.v)}; }
inline VecF operator-(VecF a, VecF b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline VecF operator*(VecF a, VecF b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline VecF operator/(VecF a, VecF b) { return {_mm512_div_ps(a.v, b.v)}; }
inline VecF fmadd(VecF a, VecF b, VecF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }    // a*b + c
inline VecF fnmadd(VecF a, VecF b, VecF c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }  // c - a*b
inline VecF fmsub(VecF a, VecF b, VecF c) { return {_mm512_fmsub_ps(a.v, b.v, c.v)}; }    // a*b - c
// max/min return b when either is NaN (the x86 rule): put the value that must propagate NaN second.
inline VecF max(VecF a, VecF b) { return {_mm512_maskz_max_ps(kAll, a.v, b.v)}; }
inline VecF min(VecF a, VecF b) { return {_mm512_maskz_min_ps(kAll, a.v, b.v)}; }
inline VecF abs(VecF a) { return {_mm512_abs_ps(a.v)}; }
inline VecF sqrt(VecF a) { return {_mm512_sqrt_ps(a.v)}; }
// Horizontal reductions: halve 512 -> 256 -> 128 -> 32 bits (written out: GCC 12's _mm512_reduce_* trip the
// same warning as above).
template <int I>
inline __m256 half(__m512 a) {
  return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(a), I));
}
inline float reduce_add(VecF a) {
  __m256 s8 = _mm256_add_ps(half<0>(a.v), half<1>(a.v));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
inline float reduce_max(VecF a) {
  __m256 s8 = _mm256_max_ps(half<0>(a.v), half<1>(a.v));
  __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
inline Mask cmp_lt(VecF a, VecF b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ); }
inline Mask cmp_gt(VecF a, VecF b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ); }
inline VecF select(Mask m, VecF if_true, VecF if_false) { return {_mm512_mask_blend_ps(m, if_false.v, if_true.v)}; }
inline VecF round_nearest(VecF a) {
  return {_mm512_maskz_roundscale_ps(kAll, a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline VecF scale2(VecF a, VecF n) { return {_mm512_maskz_scalef_ps(kAll, a.v, n.v)}; }  // a * 2^n, n integral

#else  // portable fallback: the same operations lane by lane

struct VecF {
  float v[kLanes];
};
using Mask = uint32_t;

inline Mask tail_mask(int n) { return Mask((1u << n) - 1u); }
inline VecF zero() { return VecF{}; }
inline VecF set1(float a) {
  VecF r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = a;
  return r;
}
inline VecF load(const float* p) {
  VecF r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = p[i];
  return r;
}
inline VecF load_n(const float* p, int n) {
  VecF r{};
  for (int i = 0; i < n; ++i) r.v[i] = p[i];
  return r;
}
inline void store(float* p, VecF a) {
  for (int i = 0; i < kLanes; ++i) p[i] = a.v[i];
}
inline void store_n(float* p, VecF a, int n) {
  for (int i = 0; i < n; ++i) p[i] = a.v[i];
}
#define IRIS_SIMD_BINOP(name, expr)           \
  inline VecF name(VecF a, VecF b) {          \
    VecF r;                                   \
    for (int i = 0; i < kLanes; ++i) {        \
      float x = a.v[i], y = b.v[i];           \
      r.v[i] = (expr);                        \
    }                                         \
    return r;                                 \
  }
IRIS_SIMD_BINOP(operator+, x + y)
IRIS_SIMD_BINOP(operator-, x - y)
IRIS_SIMD_BINOP(operator*, x * y)
IRIS_SIMD_BINOP(operator/, x / y)
IRIS_SIMD_BINOP(max, x > y ? x : y)
IRIS_SIMD_BINOP(min, x < y ? x : y)
IRIS_SIMD_BINOP(scale2, std::isnan(y) ? y : std::ldexp(x, int(y)))
#undef IRIS_SIMD_BINOP
inline VecF fmadd(VecF a, VecF b, VecF c) {
  VecF r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return r;
}
inline VecF fnmadd(VecF a, VecF b, VecF c) {
  VecF r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = std::fma(-a.v[i], b.v[i], c.v[i]);
  return r;
}
inline VecF fmsub(VecF a, VecF b, VecF c) {
  VecF r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = std::fma(a.v[i], b.v[i], -c.v[i]);
  return r;
}
inline VecF abs(VecF a) {
  for (float& x : a.v) x = std::fabs(x);
  return a;
}
inline VecF sqrt(VecF a) {
  for (float& x : a.v) x = std::sqrt(x);
  return a;
}
inline VecF round_nearest(VecF a) {
  for (float& x : a.v) x = std::nearbyint(x);
  return a;
}
inline float reduce_add(VecF a) {
  float s = 0;
  for (float x : a.v) s += x;
  return s;
}
inline float reduce_max(VecF a) {
  float m = a.v[0];
  for (float x : a.v) m = x > m ? x : m;
  return m;
}
inline Mask cmp_lt(VecF a, VecF b) {
  Mask m = 0;
  for (int i = 0; i < kLanes; ++i) m |= Mask(a.v[i] < b.v[i]) << i;
  return m;
}
inline Mask cmp_gt(VecF a, VecF b) { return cmp_lt(b, a); }
inline VecF select(Mask m, VecF if_true, VecF if_false) {
  VecF r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = (m >> i) & 1 ? if_true.v[i] : if_false.v[i];
  return r;
}

#endif

inline VecF operator-(VecF a) { return zero() - a; }

// ---- vector math ---------------------------------------------------------------------------------------

// 2^x. x = n + r with n = round(x), |r| <= 1/2, so 2^r = e^(r ln2) with |r ln2| <= 0.347, where the degree-7
// Taylor polynomial is exact to 6e-9 relative; scale2 applies 2^n and handles overflow to inf and underflow
// to 0. x is clamped first so that -inf gives 0 rather than NaN; NaN propagates.
inline VecF exp2(VecF x) {
  constexpr double l = 0.69314718055994530942;  // ln 2; the coefficients are l^k / k!
  x = min(set1(130.0f), max(set1(-160.0f), x));
  VecF n = round_nearest(x);
  VecF r = x - n;
  VecF p = set1(float(l * l * l * l * l * l * l / 5040.0));
  p = fmadd(p, r, set1(float(l * l * l * l * l * l / 720.0)));
  p = fmadd(p, r, set1(float(l * l * l * l * l / 120.0)));
  p = fmadd(p, r, set1(float(l * l * l * l / 24.0)));
  p = fmadd(p, r, set1(float(l * l * l / 6.0)));
  p = fmadd(p, r, set1(float(l * l / 2.0)));
  p = fmadd(p, r, set1(float(l)));
  p = fmadd(p, r, set1(1.0f));
  return scale2(p, n);
}

// e^(a + b) where b is small (|b| < ~4) and a is exact: the reduction a - n ln2 is done before adding b, so
// the result is accurate relative to e^(a + b) even when a is large and a + b would round (used by erfc, whose
// exponent -z^2 + P(t) is large). ln2 = hi + lo with hi exact in few bits, so n * hi is exact.
inline VecF exp_sum(VecF a, VecF b) {
  a = min(set1(89.0f), max(set1(-104.0f), a));
  VecF n = round_nearest((a + b) * set1(1.44269504088896341f));
  VecF r = fnmadd(n, set1(0.693359375f), a);  // ln2 hi (9 bits)
  r = fnmadd(n, set1(-2.12194440e-4f), r);     // ln2 lo
  r = r + b;
  VecF p = set1(1.0f / 5040.0f);
  p = fmadd(p, r, set1(1.0f / 720.0f));
  p = fmadd(p, r, set1(1.0f / 120.0f));
  p = fmadd(p, r, set1(1.0f / 24.0f));
  p = fmadd(p, r, set1(1.0f / 6.0f));
  p = fmadd(p, r, set1(0.5f));
  p = fmadd(p, r, set1(1.0f));
  p = fmadd(p, r, set1(1.0f));
  return scale2(p, n);
}

// e^x (Cody-Waite reduction, degree-7 Taylor polynomial of e^r on |r| <= ln2 / 2: 3e-9 truncation).
inline VecF exp(VecF x) { return exp_sum(x, zero()); }

// erfc(z) for z >= 0 given z^2 = hi + lo exactly (so callers can form z^2 without rounding).
// erfc(z) = t exp(-z^2 + P(t)) with t = 1/(1 + z/2): P is smooth on t in [0, 1] (the Numerical Recipes
// "erfcc" form); its coefficients are our own Chebyshev fit (mpmath.chebyfit, 12 terms, 1.4e-8 in double).
// Relative error ~3e-7 over the whole range, including the far tail.
inline VecF erfc_split(VecF z, VecF hi, VecF lo) {
  VecF t = set1(1.0f) / fmadd(z, set1(0.5f), set1(1.0f));
  VecF p = set1(-0.189367455655f);
  p = fmadd(p, t, set1(1.05023352231f));
  p = fmadd(p, t, set1(-2.34627239165f));
  p = fmadd(p, t, set1(2.59012919075f));
  p = fmadd(p, t, set1(-1.38666666352f));
  p = fmadd(p, t, set1(0.422859655635f));
  p = fmadd(p, t, set1(-0.26409587958f));
  p = fmadd(p, t, set1(-0.0681377039033f));
  p = fmadd(p, t, set1(0.0817567919456f));
  p = fmadd(p, t, set1(0.375074484768f));
  p = fmadd(p, t, set1(0.999998553034f));
  p = fmadd(p, t, set1(-1.26551211854f));
  return t * exp_sum(-hi, p - lo);
}

// erfc(z), z >= 0. Beyond z = 11 erfc underflows to 0; clamping there keeps z*z finite (NaN passes through).
inline VecF erfc_nonneg(VecF z) {
  z = min(set1(11.0f), z);
  VecF hi = z * z;
  return erfc_split(z, hi, fmsub(z, z, hi));
}

// Standard normal CDF Phi(x) = 0.5 erfc(-x / sqrt 2), without cancellation on either side. The exponent
// x^2 / 2 is formed exactly from x (an exact square split, halved), not from the rounded x / sqrt 2.
inline VecF normal_cdf(VecF x) {
  VecF ax = min(set1(16.0f), abs(x));  // Phi(-16) underflows to 0
  VecF hi = ax * ax;
  VecF lo = fmsub(ax, ax, hi);
  VecF c = set1(0.5f) * erfc_split(ax * set1(0.707106781186547524f), hi * set1(0.5f), lo * set1(0.5f));
  return select(cmp_lt(x, zero()), c, set1(1.0f) - c);
}

// 1 / (1 + e^-x). e^-x overflows to inf for x < -89, giving exactly 0, as the function's true value rounds to.
inline VecF sigmoid(VecF x) { return set1(1.0f) / (set1(1.0f) + exp(-x)); }

// sigmoid(x) and 1 - sigmoid(x) = e^-x sigmoid(x) (no cancellation for large x). e^-x is kept finite so that
// the product never forms 0 * inf; below x = -88 the pair is exact to ~1e-38 absolute.
inline void sigmoid_pair(VecF x, VecF& s, VecF& one_minus_s) {
  VecF e = exp(min(set1(88.0f), -x));
  s = set1(1.0f) / (set1(1.0f) + e);
  one_minus_s = e * s;
}

// Asks for the cache lines of p[0 .. n) ahead of use (rows of a KV cache are far apart in memory, which the
// hardware prefetchers do not follow). Near: to L1; otherwise to L2.
template <bool Near>
inline void prefetch_floats(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, Near ? 3 : 2);
}

// Calls f(offset, count) over [0, n) in vector-sized chunks, the last one partial (count < kLanes).
template <typename F>
inline void for_chunks(int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) f(i, kLanes);
  if (i < n) f(i, int(n - i));
}

}  // namespace iris::ops::simd
