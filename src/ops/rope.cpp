// RoPE kernel: per token, the cos/sin of its half-dimension angles are computed once (in double from the
// float angle, rounded to float like torch's float cos) and applied to every head; tokens run in parallel.
#include "ops/rope.h"

#include <algorithm>
#include <vector>

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

namespace {

using namespace simd;

void rope_apply(float* x, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                int64_t head_dim, int64_t rot_dim, float attn_scale, float sign, const char* what) {
  IRIS_CHECK(T >= 0 && n_heads > 0 && head_dim > 0, what, ": bad shape T=", T, " n_heads=", n_heads,
             " head_dim=", head_dim);
  IRIS_CHECK(rot_dim >= 0 && rot_dim <= head_dim && rot_dim % 2 == 0, what, ": rot_dim ", rot_dim,
             " must be even and <= head_dim ", head_dim);
  IRIS_CHECK(ld >= n_heads * head_dim, what, ": row stride ", ld, " < n_heads * head_dim = ", n_heads * head_dim);
  const int64_t half = rot_dim / 2;
  if (half == 0 || T == 0) return;
  const int64_t grain = std::max<int64_t>(1, 8192 / (n_heads * rot_dim));
  cpu::parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(size_t(2 * half));  // cos[0..half), sin[half..2 half)
    float* cosv = cs.data();
    float* sinv = cs.data() + half;
    for (int64_t t = t0; t < t1; ++t) {
      const float p = float(pos[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = p * inv_freq[i];  // the float product, as HF forms it
        cosv[i] = float(std::cos(double(angle))) * attn_scale;
        sinv[i] = sign * float(std::sin(double(angle))) * attn_scale;
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* a = x + t * ld + h * head_dim;
        float* b = a + half;
        for_chunks(half, [&](int64_t i, int c) {
          VecF va = load_n(a + i, c), vb = load_n(b + i, c);
          VecF vc = load_n(cosv + i, c), vs = load_n(sinv + i, c);
          store_n(a + i, fnmadd(vb, vs, va * vc), c);
          store_n(b + i, fmadd(va, vs, vb * vc), c);
        });
      }
    }
  });
}

void apply_rotation(float* x, const float* cosv, const float* sinv, int64_t half, int64_t n_heads,
                    int64_t head_dim, float sign) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* a = x + h * head_dim;
    float* b = a + half;
    for_chunks(half, [&](int64_t i, int c) {
      VecF va = load_n(a + i, c), vb = load_n(b + i, c);
      VecF vc = load_n(cosv + i, c), vs = load_n(sinv + i, c);
      if (sign < 0) vs = zero() - vs;
      store_n(a + i, fnmadd(vb, vs, va * vc), c);
      store_n(b + i, fmadd(va, vs, vb * vc), c);
    });
  }
}

void table_apply(float* x, int64_t ld, const RopeTable& tab, int64_t n_heads, int64_t head_dim, float sign,
                 const char* what) {
  IRIS_CHECK(n_heads > 0 && head_dim > 0 && 2 * tab.half <= head_dim, what, ": a table of ", tab.half,
             " angle pairs for heads of ", head_dim);
  IRIS_CHECK(ld >= n_heads * head_dim, what, ": row stride ", ld, " < n_heads * head_dim = ", n_heads * head_dim);
  if (tab.half == 0 || tab.T == 0) return;
  const int64_t grain = std::max<int64_t>(1, 8192 / (n_heads * 2 * tab.half));
  cpu::parallel_for(tab.T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      apply_rotation(x + t * ld, tab.cos.data() + t * tab.half, tab.sin.data() + t * tab.half, tab.half, n_heads,
                     head_dim, sign);
  });
}

}  // namespace

RopeTable rope_table(const int64_t* pos, int64_t T, int64_t n_streams, const int* stream_of, const float* inv_freq,
                     int64_t half, float attn_scale) {
  IRIS_CHECK(T >= 0 && half >= 0 && n_streams >= 1, "rope_table: bad shape T=", T, " half=", half);
  RopeTable tab;
  tab.T = T;
  tab.half = half;
  tab.cos.resize(size_t(T * half));
  tab.sin.resize(size_t(T * half));
  for (int64_t i = 0; i < half; ++i)
    IRIS_CHECK(!stream_of || (stream_of[i] >= 0 && stream_of[i] < n_streams), "rope_table: frequency ", i,
               " names position stream ", stream_of ? stream_of[i] : 0, " of ", n_streams);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float p = float(pos[(stream_of ? stream_of[i] : 0) * T + t]);
      const float angle = p * inv_freq[i];  // the float product, as HF forms it
      tab.cos[size_t(t * half + i)] = float(std::cos(double(angle))) * attn_scale;
      tab.sin[size_t(t * half + i)] = float(std::sin(double(angle))) * attn_scale;
    }
  return tab;
}

RopeTable rope_table_from_angles(const float* angles, int64_t T, int64_t half) {
  RopeTable tab;
  tab.T = T;
  tab.half = half;
  tab.cos.resize(size_t(T * half));
  tab.sin.resize(size_t(T * half));
  for (int64_t j = 0; j < T * half; ++j) {
    tab.cos[size_t(j)] = float(std::cos(double(angles[j])));
    tab.sin[size_t(j)] = float(std::sin(double(angles[j])));
  }
  return tab;
}

void rope_apply_table(float* x, int64_t ld, const RopeTable& tab, int64_t n_heads, int64_t head_dim) {
  table_apply(x, ld, tab, n_heads, head_dim, 1.0f, "rope_apply_table");
}

void rope_apply_table_backward(float* dx, int64_t ld, const RopeTable& tab, int64_t n_heads, int64_t head_dim) {
  table_apply(dx, ld, tab, n_heads, head_dim, -1.0f, "rope_apply_table_backward");
}

void rope_forward(float* x, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                  int64_t head_dim, int64_t rot_dim, float attn_scale) {
  rope_apply(x, ld, pos, inv_freq, T, n_heads, head_dim, rot_dim, attn_scale, 1.0f, "rope_forward");
}

void rope_backward(float* dx, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                   int64_t head_dim, int64_t rot_dim, float attn_scale) {
  rope_apply(dx, ld, pos, inv_freq, T, n_heads, head_dim, rot_dim, attn_scale, -1.0f, "rope_backward");
}

void rope_default_inv_freq(float base, int64_t rot_dim, float* out) {
  IRIS_CHECK(rot_dim > 0 && rot_dim % 2 == 0, "rope: rot_dim ", rot_dim, " must be positive and even");
  for (int64_t i = 0; i < rot_dim / 2; ++i) {
    const float e = float(2 * i) / float(rot_dim);
    out[i] = 1.0f / std::pow(base, e);
  }
}

}  // namespace iris::ops
