// GGUF block formats: the decoders against a second, deliberately naive decoder written from the format's
// definition (bit by bit, every operation in double then rounded to float, which equals float arithmetic since
// double has more than 2*24+2 bits), hand-made blocks with known values, quantizer error bounds and round trips,
// and the sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/quant_blocks.h"
#include "tensor/error.h"

using namespace iris;
using cpu::QuantType;

namespace {

const QuantType qb_all[] = {QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_K, QuantType::Q5_K, QuantType::Q6_K};

// Bit `i` of a little-endian byte string (bit 0 is the lowest bit of byte 0).
int qb_bit(const uint8_t* b, int64_t i) { return (b[i / 8] >> (i % 8)) & 1; }
// `n` bits starting at bit `i`, lowest first.
int qb_bits(const uint8_t* b, int64_t i, int n) {
  int v = 0;
  for (int k = 0; k < n; ++k) v |= qb_bit(b, i + k) << k;
  return v;
}

// IEEE binary16 from its definition: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m when e = 0.
double qb_half(const uint8_t* p) {
  const int h = qb_bits(p, 0, 16), s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = m ? NAN : INFINITY;
  else if (e == 0) v = std::ldexp(double(m), -24);
  else v = std::ldexp(double(1024 + m), e - 25);
  return s ? -v : v;
}
double qb_f(double x) { return double(float(x)); }  // one float rounding

// The naive decoder: value p of the block, straight from the layout tables (byte offset * 8 + bit offset).
float qb_naive_value(QuantType t, const uint8_t* b, int p) {
  switch (t) {
    case QuantType::Q8_0: {  // d @0, int8 qs[32] @2
      int q = qb_bits(b, (2 + p) * 8, 8);
      if (q >= 128) q -= 256;
      return float(qb_f(double(q) * qb_half(b)));
    }
    case QuantType::Q4_0: {  // d @0, qs[16] @2: value p in nibble (p / 16) of byte 2 + p % 16
      const int q = qb_bits(b, (2 + p % 16) * 8 + (p / 16) * 4, 4);
      return float(qb_f(double(q - 8) * qb_half(b)));
    }
    case QuantType::Q4_K:
    case QuantType::Q5_K: {  // d @0, dmin @2, scales[12] @4, [qh[32] @16], qs[128] @(16 or 48)
      const bool five = t == QuantType::Q5_K;
      const int j = p / 32, l = p % 32;  // sub-block, index in it
      const int64_t S = 4 * 8;           // bit offset of scales
      int sc, m;                         // 6-bit fields, written out per the packing table
      if (j < 4) {
        sc = qb_bits(b, S + j * 8, 6);
        m = qb_bits(b, S + (j + 4) * 8, 6);
      } else {
        sc = qb_bits(b, S + (j + 4) * 8, 4) | qb_bits(b, S + (j - 4) * 8 + 6, 2) << 4;
        m = qb_bits(b, S + (j + 4) * 8 + 4, 4) | qb_bits(b, S + j * 8 + 6, 2) << 4;
      }
      const int64_t qs = five ? 48 : 16;
      int q = qb_bits(b, (qs + 32 * (j / 2) + l) * 8 + (j % 2) * 4, 4);
      if (five) q += 16 * qb_bit(b, (16 + l) * 8 + j);
      const double ds = qb_f(qb_half(b) * sc), dm = qb_f(qb_half(b + 2) * m);
      return float(qb_f(qb_f(ds * q) - dm));
    }
    case QuantType::Q6_K: {  // ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208
      const int h = p / 128, k = (p % 128) / 32, l = p % 32;
      const int lo = qb_bits(b, (64 * h + 32 * (k % 2) + l) * 8 + (k / 2) * 4, 4);
      const int hi = qb_bits(b, (128 + 32 * h + l) * 8 + 2 * k, 2);
      int sc = qb_bits(b, (192 + p / 16) * 8, 8);
      if (sc >= 128) sc -= 256;
      return float(qb_f(qb_f(qb_half(b + 208) * sc) * double(lo + 16 * hi - 32)));
    }
  }
  return 0;
}

void qb_expect_same(float a, float b, const std::string& what) {
  if (std::isnan(a) && std::isnan(b)) return;
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  ASSERT_EQ(ua, ub) << what << ": " << a << " vs " << b;
}

// Offsets of the half fields of each type: d (and dmin).
std::vector<int> qb_half_offsets(QuantType t) {
  switch (t) {
    case QuantType::Q8_0:
    case QuantType::Q4_0: return {0};
    case QuantType::Q4_K:
    case QuantType::Q5_K: return {0, 2};
    case QuantType::Q6_K: return {208};
  }
  return {};
}

std::vector<float> qb_randn(int64_t n, uint64_t seed, float scale) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(g);
  return v;
}

std::vector<float> qb_dequant(QuantType t, const std::vector<uint8_t>& q) {
  const int64_t n = int64_t(q.size()) / cpu::block_bytes(t) * cpu::block_size(t);
  std::vector<float> y(static_cast<size_t>(n));
  cpu::dequantize_row(t, q.data(), y.data(), n);
  return y;
}

}  // namespace

TEST(QuantBlocks, SizesMatchGgml) {
  EXPECT_EQ(cpu::block_bytes(QuantType::Q8_0), 34);
  EXPECT_EQ(cpu::block_bytes(QuantType::Q4_0), 18);
  EXPECT_EQ(cpu::block_bytes(QuantType::Q4_K), 144);
  EXPECT_EQ(cpu::block_bytes(QuantType::Q5_K), 176);
  EXPECT_EQ(cpu::block_bytes(QuantType::Q6_K), 210);
  for (QuantType t : qb_all) {
    const int64_t bs = cpu::block_size(t);
    EXPECT_EQ(bs, (t == QuantType::Q8_0 || t == QuantType::Q4_0) ? 32 : 256);
    EXPECT_EQ(cpu::row_bytes(t, 0), 0);
    EXPECT_EQ(cpu::row_bytes(t, 7 * bs), 7 * cpu::block_bytes(t));
    for (int64_t bad : {bs - 1, bs + 1, int64_t(-bs), int64_t(100)}) {
      EXPECT_THROW(cpu::row_bytes(t, bad), Error) << cpu::quant_type_name(t) << " n=" << bad;
      std::vector<float> f(size_t(std::max<int64_t>(bad, 0)) + 512);
      std::vector<uint8_t> q(4096);
      EXPECT_THROW(cpu::dequantize_row(t, q.data(), f.data(), bad), Error);
      EXPECT_THROW(cpu::quantize_row(t, f.data(), q.data(), bad), Error);
    }
  }
  try {
    cpu::row_bytes(QuantType::Q4_K, 300);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("300"), std::string::npos) << e.what();
  }
}

// Random bytes (every bit pattern, including inf/NaN halves) and the extreme scales: f16 max, the smallest
// subnormal, zero, negative zero, negative d, in every half field; the decoder must equal the naive one bit for bit.
TEST(QuantBlocks, DequantizeMatchesNaiveBitExact) {
  std::mt19937_64 g(18);
  const uint16_t extremes[] = {0x7bff, 0xfbff, 0x0001, 0x8001, 0x0000, 0x8000, 0xbc00, 0x3c00, 0x03ff, 0x0400};
  for (QuantType t : qb_all) {
    const int64_t bb = cpu::block_bytes(t), bs = cpu::block_size(t);
    const int nblk = 64 + int(std::size(extremes)) * 2;
    std::vector<uint8_t> q(size_t(bb * nblk));
    for (auto& c : q) c = uint8_t(g());
    // Blocks 64.. get an extreme value in one half field (d, then dmin, alternately) and a random other.
    const auto offs = qb_half_offsets(t);
    for (int i = 64; i < nblk; ++i) {
      const uint16_t h = extremes[(i - 64) / 2];
      const int off = offs[size_t(i) % offs.size()];
      q[size_t(i * bb + off)] = uint8_t(h & 0xff);
      q[size_t(i * bb + off + 1)] = uint8_t(h >> 8);
    }
    const auto y = qb_dequant(t, q);
    for (int i = 0; i < nblk; ++i)
      for (int p = 0; p < bs; ++p)
        qb_expect_same(y[size_t(i * bs + p)], qb_naive_value(t, &q[size_t(i * bb)], p),
                       std::string(cpu::quant_type_name(t)) + " block " + std::to_string(i) + " value " +
                           std::to_string(p));
  }
}

// Why the decoders are bit-identical to GGML's whatever the compiler does: for every finite half d, every scale
// a format can hold and every quant, d*sc and (d*sc)*q are exact in float, so no product order or FMA matters.
TEST(QuantBlocks, ScaleProductsAreExactInFloat) {
  int64_t inexact = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint8_t hb[2] = {uint8_t(h & 0xff), uint8_t(h >> 8)};
    const double d = qb_half(hb);
    if (!std::isfinite(d)) continue;
    for (int sc = -128; sc < 128; ++sc) {
      const float ds = float(d) * float(sc);
      if (double(ds) != d * sc) ++inexact;
      for (int q : {-32, -31, -29, -27, -23, -15, 31, 29, 27, 23, 15})  // the quants with most bits; Q8_0's d*q is ds
        if (double(ds * float(q)) != d * sc * q) ++inexact;
    }
  }
  EXPECT_EQ(inexact, 0);
}

TEST(QuantBlocks, HandMadeQ8_0AndQ4_0) {
  uint8_t b8[34] = {0x00, 0x34};  // d = 0.25
  for (int i = 0; i < 32; ++i) b8[2 + i] = uint8_t(int8_t(i - 16));
  float y[32];
  cpu::dequantize_row(QuantType::Q8_0, b8, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.25f * float(i - 16)) << i;

  uint8_t b4[18] = {0x00, 0xb8};  // d = -0.5
  for (int i = 0; i < 16; ++i) b4[2 + i] = uint8_t(i | ((15 - i) << 4));  // low nibbles 0..15, high 15..0
  cpu::dequantize_row(QuantType::Q4_0, b4, y, 32);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], -0.5f * float(i - 8)) << i;        // values 0..15: -8d .. 7d
    EXPECT_EQ(y[16 + i], -0.5f * float(7 - i)) << i;  // values 16..31: the high nibbles, same byte order
  }
}

// The 6-bit scale/min packing, written byte by byte from the table in quant_blocks.cpp, and Q5_K's fifth bit.
TEST(QuantBlocks, HandMadeQ4_KAndQ5_K) {
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = 10 + 7 * j;  // 10..59: sub-blocks 4..7 need their top 2 bits
    m[j] = 60 - 5 * j;   // 60..25
  }
  for (bool five : {false, true}) {
    std::vector<uint8_t> b(five ? 176 : 144, 0);
    b[1] = 0x3c;  // d = 1
    b[3] = 0x38;  // dmin = 0.5
    for (int j = 0; j < 4; ++j) {
      b[size_t(4 + j)] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
      b[size_t(8 + j)] = uint8_t(m[j] | ((m[j + 4] >> 4) << 6));
      b[size_t(12 + j)] = uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    const size_t qs = five ? 48 : 16;
    for (int l = 0; l < 128; ++l) b[qs + size_t(l)] = uint8_t((l % 16) | ((15 - l % 16) << 4));
    if (five) b[16 + 3] = 0xa5;  // value 3 of sub-blocks 0, 2, 5, 7 gains 16
    const auto y = qb_dequant(five ? QuantType::Q5_K : QuantType::Q4_K, b);
    for (int j = 0; j < 8; ++j)
      for (int l = 0; l < 32; ++l) {
        int q = (j % 2 == 0) ? (32 * (j / 2) + l) % 16 : 15 - (32 * (j / 2) + l) % 16;
        if (five && l == 3 && (0xa5 >> j) & 1) q += 16;
        EXPECT_EQ(y[size_t(32 * j + l)], float(sc[j]) * float(q) - 0.5f * float(m[j])) << five << " " << j << " " << l;
      }
  }
}

TEST(QuantBlocks, HandMadeQ6_K) {
  std::vector<uint8_t> b(210, 0);
  for (int j = 0; j < 16; ++j) b[size_t(192 + j)] = uint8_t(int8_t(j - 8));
  b[209] = 0x40;  // d = 2
  b[128 + 0] = 0xe4;     // qh byte 0 = 3,2,1,0 in its 2-bit fields: values 0, 32, 64, 96 get high bits 0, 1, 2, 3
  b[0] = 0x21;           // ql byte 0: value 0 low bits 1, value 64 low bits 2
  b[64 + 32 + 5] = 0x7f; // ql byte 101: value 128+32+5 low bits 15, value 128+96+5 low bits 7
  const auto y = qb_dequant(QuantType::Q6_K, b);
  auto expect = [&](int p, int q) { EXPECT_EQ(y[size_t(p)], 2.0f * float(p / 16 - 8) * float(q - 32)) << p; };
  expect(0, 1);
  expect(32, 16);
  expect(64, 2 + 32);
  expect(96, 48);
  expect(128 + 32 + 5, 15);
  expect(128 + 96 + 5, 7);
  expect(1, 0);
  expect(255, 0);
}

// Random data: each value within the format's worst-case error of its (sub-)block's scale.
TEST(QuantBlocks, QuantizeErrorBounds) {
  const float eps16 = 1.0f / 1024;           // half rounding (relative, generous) ...
  const float hd = std::ldexp(1.0f, -25);    // ... and absolute, for scales in the subnormal halves
  for (QuantType t : qb_all) {
    const int64_t n = 8 * 256;
    for (float scale : {1.0f, 0.02f, 300.0f}) {
      auto x = qb_randn(n, 7, scale);
      for (int i = 0; i < 40; ++i) x[size_t(i * 37)] = std::fabs(x[size_t(i * 37)]) + 2 * scale;  // outliers
      std::vector<uint8_t> q(size_t(cpu::row_bytes(t, n)));
      cpu::quantize_row(t, x.data(), q.data(), n);
      const auto y = qb_dequant(t, q);
      double sq = 0, sqx = 0;
      for (int64_t blk = 0; blk < n / 256; ++blk) {
        const float* xb = &x[size_t(blk * 256)];
        // per-group extremes, groups of 32 (16 for Q6_K)
        const int gs = t == QuantType::Q6_K ? 16 : 32;
        float gmax[16], gmin[16], gabs[16], big_scale = 0, big_offs = 0, big_abs = 0;
        for (int gi = 0; gi < 256 / gs; ++gi) {
          gmax[gi] = -INFINITY;
          gmin[gi] = 0;
          gabs[gi] = 0;
          for (int l = 0; l < gs; ++l) {
            const float v = xb[gi * gs + l];
            gmax[gi] = std::max(gmax[gi], v);
            gmin[gi] = std::min(gmin[gi], v);
            gabs[gi] = std::max(gabs[gi], std::fabs(v));
          }
          big_abs = std::max(big_abs, gabs[gi]);
          big_offs = std::max(big_offs, -gmin[gi]);
        }
        for (int p = 0; p < 256; ++p) {
          const int gi = p / gs;
          float bound = 0;
          switch (t) {
            case QuantType::Q8_0:  // half a step, plus the half rounding of d times |q| <= 127
              bound = gabs[gi] / 127 * (0.5f + 127 * eps16) + 127 * hd;
              break;
            case QuantType::Q4_0:  // a full step: the value opposite the extreme maps to +8, clamped to 7
              bound = gabs[gi] / 8 * (1 + 16 * eps16) + 16 * hd;
              break;
            case QuantType::Q4_K:
            case QuantType::Q5_K: {  // half a step, plus the 6-bit rounding of sc (up to nmax/2 steps of d) and m
              const float nmax = t == QuantType::Q4_K ? 15 : 31;
              for (int k = 0; k < 8; ++k) big_scale = std::max(big_scale, (gmax[k] - gmin[k]) / nmax);
              const float d = big_scale / 63 * (1 + eps16), dmin = big_offs / 63 * (1 + eps16);
              bound = 0.5f * (gmax[gi] - gmin[gi]) / nmax + (nmax / 2 + 1) * d + 0.5f * dmin + 64 * (nmax + 1) * hd;
              break;
            }
            case QuantType::Q6_K: {  // a full step (q = +32 clamps to 31), plus the 8-bit rounding of the scale
              const float d = big_abs / 32 / 128 * (1 + eps16);
              bound = gabs[gi] / 32 * (1 + eps16) + 17 * d + 128 * 32 * hd;
              break;
            }
          }
          const float e = std::fabs(y[size_t(blk * 256 + p)] - xb[p]);
          ASSERT_LE(e, bound * (1 + 1e-5f) + 1e-30f) << cpu::quant_type_name(t) << " scale " << scale << " at "
                                                   << blk * 256 + p << " x=" << xb[p];
          sq += double(e) * e;
          sqx += double(xb[p]) * xb[p];
        }
      }
      // and on average far better than the worst case (relative RMS error; 4-bit formats ~10%)
      const double rel = std::sqrt(sq / sqx);
      const double lim = t == QuantType::Q8_0 ? 0.01 : t == QuantType::Q6_K ? 0.03 : t == QuantType::Q5_K ? 0.06 : 0.15;
      EXPECT_LT(rel, lim) << cpu::quant_type_name(t) << " scale " << scale;
    }
  }
}

// Blocks built on each format's grid (each (sub-)block reaching the ends its quantizer maps extremes to) come
// back value for value: quantize(dequantize(b)) dequantizes to the same floats.
TEST(QuantBlocks, QuantizeRoundTripOnGrid) {
  std::mt19937_64 g(5);
  auto put_half = [](uint8_t* p, uint16_t h) {
    p[0] = uint8_t(h & 0xff);
    p[1] = uint8_t(h >> 8);
  };
  const uint16_t ds[] = {0x3c00, 0x2e66, 0x7bff, 0x0001, 0x0400, 0x1234, 0x5555};  // includes f16 max, subnormal
  for (QuantType t : qb_all) {
    for (int trial = 0; trial < 40; ++trial) {
      const int64_t bb = cpu::block_bytes(t);
      std::vector<uint8_t> b(static_cast<size_t>(bb));
      for (auto& c : b) c = uint8_t(g());
      uint16_t d = ds[size_t(trial) % std::size(ds)];
      if (t != QuantType::Q4_K && t != QuantType::Q5_K && trial % 2) d |= 0x8000;  // negative d
      switch (t) {
        case QuantType::Q8_0: {  // q in [-127, 127], one at +-127
          put_half(b.data(), d);
          for (int i = 0; i < 32; ++i) b[size_t(2 + i)] = uint8_t(int8_t(int(g() % 255) - 127));
          b[size_t(2 + g() % 32)] = uint8_t(int8_t(trial % 4 ? 127 : -127));
          break;
        }
        case QuantType::Q4_0:  // one nibble 0 (q = -8)
          put_half(b.data(), d);
          b[size_t(2 + g() % 16)] &= trial % 3 ? 0xf0 : 0x0f;
          break;
        case QuantType::Q4_K:
        case QuantType::Q5_K: {  // every sub-block has q = 0 and q = nmax; some sc and some m reach 63
          const bool five = t == QuantType::Q5_K;
          put_half(b.data(), d);
          // dmin in d's binade (or zero): with dmin*m thousands of times d*sc, the float sum d*sc*q - dmin*m
          // drops q's low bits and no quantizer could recover the block from its values.
          put_half(b.data() + 2, trial % 5 == 4 ? uint16_t(0) : uint16_t(d ^ (g() % 1024)));
          int sc[8], m[8];
          for (int j = 0; j < 8; ++j) {
            sc[j] = int(g() % 64);
            m[j] = int(g() % 64);
          }
          sc[g() % 8] = 63;
          m[g() % 8] = 63;
          for (int j = 0; j < 4; ++j) {
            b[size_t(4 + j)] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
            b[size_t(8 + j)] = uint8_t(m[j] | ((m[j + 4] >> 4) << 6));
            b[size_t(12 + j)] = uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
          }
          const size_t qs = five ? 48 : 16;
          for (int j = 0; j < 8; ++j) {
            const int shift = (j % 2) * 4;
            const size_t lo = qs + 32 * size_t(j / 2), hi_l = g() % 16, lo_l = 16 + g() % 16;
            b[lo + lo_l] = uint8_t(b[lo + lo_l] & ~(15 << shift));  // q = 0
            b[lo + hi_l] = uint8_t(b[lo + hi_l] | (15 << shift));   // q = 15 (or 31)
            if (five) {
              b[16 + lo_l] = uint8_t(b[16 + lo_l] & ~(1 << j));
              b[16 + hi_l] = uint8_t(b[16 + hi_l] | (1 << j));
            }
          }
          break;
        }
        case QuantType::Q6_K: {  // every sub-block of 16 has q = 0 (-32); one scale is -128, the rest > -128
          put_half(b.data() + 208, d);
          for (int j = 0; j < 16; ++j) {
            if (b[size_t(192 + j)] == 0x80) b[size_t(192 + j)] = 0x81;
            const int p = 16 * j + int(g() % 16), h = p / 128, k = (p % 128) / 32, l = p % 32;
            b[size_t(64 * h + l + 32 * (k % 2))] &= uint8_t(k >= 2 ? 0x0f : 0xf0);
            b[size_t(128 + 32 * h + l)] &= uint8_t(~(3 << (2 * k)));
          }
          b[size_t(192 + g() % 16)] = 0x80;
          break;
        }
      }
      const auto y = qb_dequant(t, b);
      std::vector<uint8_t> b2(static_cast<size_t>(bb));
      cpu::quantize_row(t, y.data(), b2.data(), cpu::block_size(t));
      const auto y2 = qb_dequant(t, b2);
      for (size_t p = 0; p < y.size(); ++p)
        ASSERT_EQ(y2[p], y[p]) << cpu::quant_type_name(t) << " trial " << trial << " value " << p;
    }
  }
}

// Zeros, and a constant row: no NaN from a zero scale.
TEST(QuantBlocks, QuantizeZerosAndConstants) {
  for (QuantType t : qb_all) {
    const int64_t n = 256;
    for (float c : {0.0f, 1.5f, -2.0f}) {
      std::vector<float> x(size_t(n), c);
      std::vector<uint8_t> q(size_t(cpu::row_bytes(t, n)));
      cpu::quantize_row(t, x.data(), q.data(), n);
      const auto y = qb_dequant(t, q);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(y[size_t(i)], c, std::fabs(c) * 0.02f) << cpu::quant_type_name(t) << " c=" << c << " i=" << i;
    }
  }
}
