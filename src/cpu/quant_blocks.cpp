// GGUF block formats: decoders bit-identical to GGML's scalar reference and a reference quantizer (see the header
// for the layouts and the quantizer's scale rules). Scalar code: the fast kernels (dot products on packed blocks)
// come later and are tested against dequantize_row.
#include "cpu/quant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace iris::cpu {

namespace {

constexpr int64_t qb_kQK = 32;    // values per Q8_0 / Q4_0 block
constexpr int64_t qb_kQK_K = 256;  // values per K-quant super-block

// Half fields are little-endian; memcpy-free byte reads keep this correct on any host.
inline float qb_half(const uint8_t* p) { return f16_to_f32(uint16_t(p[0] | (p[1] << 8))); }
inline void qb_put_half(uint8_t* p, float v) {
  uint16_t h = f32_to_f16(v);  // round to nearest even, as GGML_FP32_TO_FP16 (checked exhaustively against F16C)
  p[0] = uint8_t(h & 0xff);
  p[1] = uint8_t(h >> 8);
}

// Round half to even (the default rounding mode), as GGML's nearest_int does for the K-quants.
inline int qb_nearest(float x) { return int(std::nearbyint(x)); }

// The 12 bytes of Q4_K/Q5_K scales hold 8 six-bit scales sc[j] and 8 six-bit mins m[j]:
//   bytes 0..3:  bits 0-5 = sc[0..3], bits 6-7 = bits 4-5 of sc[4..7]
//   bytes 4..7:  bits 0-5 = m[0..3],  bits 6-7 = bits 4-5 of m[4..7]
//   bytes 8..11: bits 0-3 = bits 0-3 of sc[4..7], bits 4-7 = bits 0-3 of m[4..7]
// (GGML's get_scale_min_k4.)
inline void qb_scale_min_k4(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

inline void qb_pack_scale_min_k4(uint8_t* s, const int* sc, const int* m) {
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
  }
}

// ---- decoders: one block each; y receives block_size values ----

void qb_dequant_q8_0(const uint8_t* b, float* y) {  // (34 bytes) -> (32)
  const float d = qb_half(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int i = 0; i < 32; ++i) y[i] = float(qs[i]) * d;
}

void qb_dequant_q4_0(const uint8_t* b, float* y) {  // (18 bytes) -> (32)
  const float d = qb_half(b);
  const uint8_t* qs = b + 2;
  for (int i = 0; i < 16; ++i) {
    y[i] = float((qs[i] & 0x0f) - 8) * d;
    y[i + 16] = float((qs[i] >> 4) - 8) * d;
  }
}

// Q4_K / Q5_K share the order: 4 chunks of 64 values; chunk c reads qs[32c .. 32c+31], its first 32 values are
// the low nibbles (sub-block 2c), the next 32 the high nibbles (sub-block 2c+1). Q5_K's fifth bit of value l
// (0..31) of sub-block j is bit j of qh[l]. GGML computes (d*sc)*q - (dmin*m); the products are exact (at most
// 11+6+5 bits), so only the subtraction rounds, once, fused or not.
void qb_dequant_k45(const uint8_t* b, float* y, bool five) {  // (144 or 176 bytes) -> (256)
  const float d = qb_half(b), dmin = qb_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;                 // Q5_K only
  const uint8_t* qs = b + (five ? 48 : 16);  // (128)
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    qb_scale_min_k4(scales, j, sc, m);
    const float ds = d * float(sc), dm = dmin * float(m);
    const uint8_t* q = qs + 32 * (j / 2);
    const int shift = (j & 1) * 4;
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> shift) & 0x0f;
      if (five) v |= ((qh[l] >> j) & 1) << 4;
      y[32 * j + l] = ds * float(v) - dm;
    }
  }
}

// Q6_K: 2 halves of 128 values; half h reads ql[64h .. 64h+63] and qh[32h .. 32h+31]. Within a half, value
// 32k + l (k = 0..3, l = 0..31) takes its low 4 bits from ql[64h + l + 32*(k&1)] (low nibble for k < 2, high
// for k >= 2) and its high 2 bits from bits 2k, 2k+1 of qh[32h + l]; value p of the block uses scales[p/16].
// GGML computes (d*scale)*(q-32); both products are exact (at most 11+7+5 bits: -128 and -32 are powers of two).
void qb_dequant_q6_k(const uint8_t* b, float* y) {  // (210 bytes) -> (256)
  const uint8_t* ql = b;                                       // (128)
  const uint8_t* qh = b + 128;                                 // (64)
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);  // (16)
  const float d = qb_half(b + 208);
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int p = 128 * h + 32 * k + l;
        const int lo = (ql[64 * h + l + 32 * (k & 1)] >> (k >= 2 ? 4 : 0)) & 0x0f;
        const int hi = (qh[32 * h + l] >> (2 * k)) & 3;
        y[p] = (d * float(sc[p / 16])) * float((lo | (hi << 4)) - 32);
      }
}

// ---- quantizers: one block each from block_size values x ----

// GGML's rules: d = absmax/127 stored as half; q = roundf(x / d) (half away from zero) with the unrounded d.
void qb_quant_q8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  qb_put_half(b, d);
  for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(std::round(x[i] * id)));
}

// GGML's rules: d = -m/8 where m is the value of largest magnitude (the first, on ties), so that value lands on
// q = -8, the end of the asymmetric range [-8, 7]; nibble = min(15, trunc(x/d + 8.5)) (rounds halves up).
void qb_quant_q4_0(const float* x, uint8_t* b) {
  float amax = 0, mx = 0;
  for (int i = 0; i < 32; ++i)
    if (amax < std::fabs(x[i])) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  const float d = mx / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
  qb_put_half(b, d);
  for (int i = 0; i < 16; ++i) {
    const int q0 = std::clamp(int(x[i] * id + 8.5f), 0, 15), q1 = std::clamp(int(x[i + 16] * id + 8.5f), 0, 15);
    b[2 + i] = uint8_t(q0 | (q1 << 4));
  }
}

// Sub-block j of 32 gets scale (max - min)/nmax and offset -min (min clamped to <= 0, since the format subtracts
// dmin*m with m >= 0); the 8 scales and offsets are quantized to 6 bits against the largest of each, using the
// half-rounded d and dmin, and the values are then rounded against the decoder's exact ds and dm floats.
void qb_quant_k45(const float* x, uint8_t* b, bool five) {
  const int nmax = five ? 31 : 15;
  float scale[8], offs[8], max_scale = 0, max_offs = 0;
  for (int j = 0; j < 8; ++j) {
    float mn = 0, mx = x[32 * j];
    for (int l = 0; l < 32; ++l) {
      mn = std::min(mn, x[32 * j + l]);
      mx = std::max(mx, x[32 * j + l]);
    }
    scale[j] = (mx - mn) / float(nmax);
    offs[j] = -mn;
    max_scale = std::max(max_scale, scale[j]);
    max_offs = std::max(max_offs, offs[j]);
  }
  qb_put_half(b, max_scale / 63.0f);
  qb_put_half(b + 2, max_offs / 63.0f);
  const float d = qb_half(b), dmin = qb_half(b + 2);
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0 ? std::clamp(qb_nearest(scale[j] / d), 0, 63) : 0;
    m[j] = dmin > 0 ? std::clamp(qb_nearest(offs[j] / dmin), 0, 63) : 0;
  }
  qb_pack_scale_min_k4(b + 4, sc, m);
  uint8_t* qh = b + 16;
  uint8_t* qs = b + (five ? 48 : 16);
  if (five) std::memset(qh, 0, 32);
  std::memset(qs, 0, 128);
  for (int j = 0; j < 8; ++j) {
    const float ds = d * float(sc[j]), dm = dmin * float(m[j]);
    for (int l = 0; l < 32; ++l) {
      const int q = ds > 0 ? std::clamp(qb_nearest((x[32 * j + l] + dm) / ds), 0, nmax) : 0;
      qs[32 * (j / 2) + l] |= uint8_t((q & 0x0f) << ((j & 1) * 4));
      if (five) qh[l] |= uint8_t(((q >> 4) & 1) << j);
    }
  }
}

// Sub-block j of 16 gets scale -m/32 where m is its value of largest magnitude (so m lands on q = -32); the 16
// scales are quantized to int8 against the largest (whose scale becomes -128), using the half-rounded d.
void qb_quant_q6_k(const float* x, uint8_t* b) {
  float s[16], smax = 0, samax = 0;
  for (int j = 0; j < 16; ++j) {
    float amax = 0, mx = 0;
    for (int l = 0; l < 16; ++l)
      if (amax < std::fabs(x[16 * j + l])) {
        amax = std::fabs(x[16 * j + l]);
        mx = x[16 * j + l];
      }
    s[j] = mx / -32.0f;
    if (samax < std::fabs(s[j])) {
      samax = std::fabs(s[j]);
      smax = s[j];
    }
  }
  qb_put_half(b + 208, smax / -128.0f);
  const float d = qb_half(b + 208);
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  for (int j = 0; j < 16; ++j) sc[j] = int8_t(d != 0 ? std::clamp(qb_nearest(s[j] / d), -128, 127) : 0);
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  std::memset(ql, 0, 128 + 64);
  for (int p = 0; p < 256; ++p) {
    const float ds = d * float(sc[p / 16]);
    const int q = (ds != 0 ? std::clamp(qb_nearest(x[p] / ds), -32, 31) : 0) + 32;  // 0..63
    const int h = p / 128, k = (p % 128) / 32, l = p % 32;
    ql[64 * h + l + 32 * (k & 1)] |= uint8_t((q & 0x0f) << (k >= 2 ? 4 : 0));
    qh[32 * h + l] |= uint8_t((q >> 4) << (2 * k));
  }
}

int64_t qb_blocks(QuantType t, int64_t n, const char* what) {
  const int64_t bs = block_size(t);
  IRIS_CHECK(n >= 0 && n % bs == 0, what, ": ", quant_type_name(t), " needs a multiple of ", bs,
             " values per row, got n = ", n);
  return n / bs;
}

}  // namespace

const char* quant_type_name(QuantType t) {
  switch (t) {
    case QuantType::Q8_0: return "Q8_0";
    case QuantType::Q4_0: return "Q4_0";
    case QuantType::Q4_K: return "Q4_K";
    case QuantType::Q5_K: return "Q5_K";
    case QuantType::Q6_K: return "Q6_K";
  }
  return "unknown";
}

int64_t block_size(QuantType t) {
  switch (t) {
    case QuantType::Q8_0:
    case QuantType::Q4_0: return qb_kQK;
    case QuantType::Q4_K:
    case QuantType::Q5_K:
    case QuantType::Q6_K: return qb_kQK_K;
  }
  IRIS_CHECK(false, "block_size: unknown quant type ", int(t));
  return 0;
}

int64_t block_bytes(QuantType t) {
  switch (t) {
    case QuantType::Q8_0: return 2 + 32;                 // d, qs
    case QuantType::Q4_0: return 2 + 16;                 // d, qs
    case QuantType::Q4_K: return 2 + 2 + 12 + 128;       // d, dmin, scales, qs
    case QuantType::Q5_K: return 2 + 2 + 12 + 32 + 128;  // d, dmin, scales, qh, qs
    case QuantType::Q6_K: return 128 + 64 + 16 + 2;      // ql, qh, scales, d
  }
  IRIS_CHECK(false, "block_bytes: unknown quant type ", int(t));
  return 0;
}

int64_t row_bytes(QuantType t, int64_t n) { return qb_blocks(t, n, "row_bytes") * block_bytes(t); }

void dequantize_row(QuantType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = qb_blocks(t, n, "dequantize_row"), bb = block_bytes(t), bs = block_size(t);
  const uint8_t* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nb; ++i, b += bb, dst += bs) {
    switch (t) {
      case QuantType::Q8_0: qb_dequant_q8_0(b, dst); break;
      case QuantType::Q4_0: qb_dequant_q4_0(b, dst); break;
      case QuantType::Q4_K: qb_dequant_k45(b, dst, false); break;
      case QuantType::Q5_K: qb_dequant_k45(b, dst, true); break;
      case QuantType::Q6_K: qb_dequant_q6_k(b, dst); break;
    }
  }
}

void quantize_row(QuantType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = qb_blocks(t, n, "quantize_row"), bb = block_bytes(t), bs = block_size(t);
  uint8_t* b = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < nb; ++i, b += bb, src += bs) {
    switch (t) {
      case QuantType::Q8_0: qb_quant_q8_0(src, b); break;
      case QuantType::Q4_0: qb_quant_q4_0(src, b); break;
      case QuantType::Q4_K: qb_quant_k45(src, b, false); break;
      case QuantType::Q5_K: qb_quant_k45(src, b, true); break;
      case QuantType::Q6_K: qb_quant_q6_k(src, b); break;
    }
  }
}

}  // namespace iris::cpu
