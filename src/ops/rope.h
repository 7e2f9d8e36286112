// Rotary position embedding, rotate-half form (HF Llama): for token t at position pos[t], each head, i < half
// (half = rot_dim / 2): angle = pos[t] * inv_freq[i],
//   (x[i], x[i + half]) -> (x[i] cos - x[i + half] sin, x[i + half] cos + x[i] sin),
// with cos and sin multiplied by attn_scale (HF's attention_scaling; 1 for plain RoPE). Dims >= rot_dim are
// untouched (partial rotary). Like HF, the angle is the float product pos * inv_freq, then cos/sin of it.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace iris::ops {

// x: (T, n_heads, head_dim), `ld` floats between consecutive tokens (ld >= n_heads * head_dim), in place.
// pos: (T); inv_freq: (rot_dim / 2); rot_dim even, <= head_dim.
void rope_forward(float* x, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                  int64_t head_dim, int64_t rot_dim, float attn_scale = 1.0f);
// The gradient through rope_forward, in place on dx: the transposed rotation (angle -> -angle).
void rope_backward(float* dx, int64_t ld, const int64_t* pos, const float* inv_freq, int64_t T, int64_t n_heads,
                   int64_t head_dim, int64_t rot_dim, float attn_scale = 1.0f);

// Rotation angles computed once per forward and shared by every layer: cos and sin (T, half) of each token's
// angles, attn_scale folded in. Positions come in n_streams streams (n_streams, T): plain RoPE has one; M-RoPE
// (Qwen2-VL) has three (t, h, w) and frequency pair i takes its position from stream stream_of[i]. The angle is
// the float product pos * inv_freq[i], as Hugging Face forms it, cos/sin evaluated in double and rounded.
struct RopeTable {
  int64_t T = 0, half = 0;
  std::vector<float> cos, sin;  // (T, half)
};
// pos: (n_streams, T) row-major; stream_of: (half) or nullptr (all stream 0); inv_freq: (half).
RopeTable rope_table(const int64_t* pos, int64_t T, int64_t n_streams, const int* stream_of, const float* inv_freq,
                     int64_t half, float attn_scale = 1.0f);
// A table from per-token angles (T, half) directly (vision 2-D RoPE: row angles then column angles).
RopeTable rope_table_from_angles(const float* angles, int64_t T, int64_t half);
// rope_forward / rope_backward with the angles of a table: x (T, n_heads, head_dim), rows ld apart; rot_dim = 2 * half.
void rope_apply_table(float* x, int64_t ld, const RopeTable& tab, int64_t n_heads, int64_t head_dim);
void rope_apply_table_backward(float* dx, int64_t ld, const RopeTable& tab, int64_t n_heads, int64_t head_dim);

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
