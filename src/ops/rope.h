// Rotary position embedding, rotate-half form (HF Llama): for token t at position pos[t], each head, i < half
// (half = rot_dim / 2): angle = pos[t] * inv_freq[i],
//   (x[i], x[i + half]) -> (x[i] cos - x[i + half] sin, x[i + half] cos + x[i] sin),
// with cos and sin multiplied by attn_scale (HF's attention_scaling; 1 for plain RoPE). Dims >= rot_dim are
// untouched (partial rotary). Like HF, the angle is the float product pos * inv_freq, then cos/sin of it.
#pragma once
#include <cmath>
#include <cstdint>

namespace iris::ops {

// x: (T, n_heads, head_dim), `ld` floats between consecutive tokens (ld >= n_heads * head_dim), in place.
// pos: (T); inv_freq: (rot_dim / 2); rot_dim even, <= head_dim.
void rope_forward(float* x, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                  int64_t head_dim, int64_t rot_dim, float attn_scale = 1.0f);
// The gradient through rope_forward, in place on dx: the transposed rotation (angle -> -angle).
void rope_backward(float* dx, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                   int64_t head_dim, int64_t rot_dim, float attn_scale = 1.0f);

// HF's default inverse frequencies: inv_freq[i] = 1 / base^(2i / rot_dim), computed as torch does
// (the exponent in float, the power in float), out: (rot_dim / 2).
void rope_default_inv_freq(float base, int64_t rot_dim, float* out);

namespace ref {

// sign = +1: forward rotation; -1: its transpose (backward).
template <typename T>
void rope_apply(T* x, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t n_tok, int64_t n_heads,
                int64_t head_dim, int64_t rot_dim, T attn_scale, T sign) {
  const int64_t half = rot_dim / 2;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      T* xh = x + t * ld + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        T angle = T(pos[t]) * T(inv_freq[i]);
        T c = std::cos(angle) * attn_scale, s = sign * std::sin(angle) * attn_scale;
        T a = xh[i], b = xh[i + half];
        xh[i] = a * c - b * s;
        xh[i + half] = b * c + a * s;
      }
    }
}
template <typename T>
void rope_forward(T* x, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t n_tok, int64_t n_heads,
                  int64_t head_dim, int64_t rot_dim, T attn_scale = T(1)) {
  rope_apply(x, ld, pos, inv_freq, n_tok, n_heads, head_dim, rot_dim, attn_scale, T(1));
}
template <typename T>
void rope_backward(T* dx, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t n_tok, int64_t n_heads,
                   int64_t head_dim, int64_t rot_dim, T attn_scale = T(1)) {
  rope_apply(dx, ld, pos, inv_freq, n_tok, n_heads, head_dim, rot_dim, attn_scale, T(-1));
}

}  // namespace ref
}  // namespace iris::ops
