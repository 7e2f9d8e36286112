// Scaled dot-product attention with grouped KV heads (MHA, GQA, MQA), causal or not, forward and backward,
// flash-attention style: keys are processed in tiles with an online softmax, so no Tq x Tk matrix is stored.
//
// q: (Tq, n_head, hd) with rows ldq floats apart; k, v: (Tk, n_kv_head, hd), rows ldk / ldv apart;
// out: (Tq, n_head, hd), rows ldo apart. n_head % n_kv_head == 0 and query head h uses kv head
// h / (n_head / n_kv_head). Causal: query i sits at absolute position q_offset + i and sees keys
// 0..q_offset + i (keys are at positions 0..Tk-1), as in decoding with a KV cache; non-causal: all keys.
// Sliding window (causal only; window > 0): query i sees only the last `window` of those keys,
// q_offset + i - window < j <= q_offset + i (Hugging Face's sliding-window mask: Mistral, Qwen2). 0: no window.
// lse (optional, (n_head, Tq)): the per-row log-sum-exp of the scaled scores, kept for the backward.
// Tk >= 1 and q_offset >= 0 (so every query sees key 0); bad shapes and strides throw iris::Error. Outputs
// must not overlap the inputs. The result does not depend on the thread count except through float rounding.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace iris::ops {

void attention_forward(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                       float* out, int64_t ldo, int64_t Tq, int64_t Tk, int64_t n_head, int64_t n_kv_head, int64_t hd,
                       float scale, bool causal, int64_t q_offset, float* lse, int64_t window = 0);

// Gradients given out and lse from the forward and dout (Tq, n_head, hd) rows lddo apart: dq (like q, rows
// lddq apart) is overwritten; dk, dv (like k, v, rows lddk / lddv apart) are ACCUMULATED (+=), so that
// KV-head sharing and calls over chunks of queries sum.
void attention_backward(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                        const float* out, int64_t ldo, const float* lse, const float* dout, int64_t lddo, float* dq,
                        int64_t lddq, float* dk, int64_t lddk, float* dv, int64_t lddv, int64_t Tq, int64_t Tk,
                        int64_t n_head, int64_t n_kv_head, int64_t hd, float scale, bool causal, int64_t q_offset,
                        int64_t window = 0);

// Naive references: one query row at a time with the whole score row materialised.
namespace ref {

// The last key query row i may see.
inline int64_t attention_last_key(int64_t i, int64_t Tk, bool causal, int64_t q_offset) {
  return causal ? std::min(q_offset + i, Tk - 1) : Tk - 1;
}
// The first key query row i may see.
inline int64_t attention_first_key(int64_t i, bool causal, int64_t q_offset, int64_t window) {
  return causal && window > 0 ? std::max<int64_t>(0, q_offset + i - window + 1) : 0;
}

template <typename T>
void attention_forward(const T* q, int64_t ldq, const T* k, int64_t ldk, const T* v, int64_t ldv, T* out,
                       int64_t ldo, int64_t Tq, int64_t Tk, int64_t n_head, int64_t n_kv_head, int64_t hd, T scale,
                       bool causal, int64_t q_offset, T* lse, int64_t window = 0) {
  const int64_t group = n_head / n_kv_head;
  std::vector<T> s(static_cast<size_t>(Tk));
  for (int64_t h = 0; h < n_head; ++h) {
    const int64_t kh = h / group;
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t last = attention_last_key(i, Tk, causal, q_offset);
      const int64_t first = attention_first_key(i, causal, q_offset, window);
      T m = -INFINITY;
      for (int64_t j = first; j <= last; ++j) {
        T dot = 0;
        for (int64_t d = 0; d < hd; ++d) dot += q[i * ldq + h * hd + d] * k[j * ldk + kh * hd + d];
        s[j] = scale * dot;
        m = std::max(m, s[j]);
      }
      T sum = 0;
      for (int64_t j = first; j <= last; ++j) sum += std::exp(s[j] - m);
      const T l = m + std::log(sum);
      for (int64_t d = 0; d < hd; ++d) {
        T o = 0;
        for (int64_t j = first; j <= last; ++j) o += std::exp(s[j] - l) * v[j * ldv + kh * hd + d];
        out[i * ldo + h * hd + d] = o;
      }
      if (lse) lse[h * Tq + i] = l;
    }
  }
}

// p = exp(s - lse), D = dout . out, ds = p (dout . v - D); dq = scale ds k; dk += scale ds q; dv += p dout.
template <typename T>
void attention_backward(const T* q, int64_t ldq, const T* k, int64_t ldk, const T* v, int64_t ldv, const T* out,
                        int64_t ldo, const T* lse, const T* dout, int64_t lddo, T* dq, int64_t lddq, T* dk,
                        int64_t lddk, T* dv, int64_t lddv, int64_t Tq, int64_t Tk, int64_t n_head, int64_t n_kv_head,
                        int64_t hd, T scale, bool causal, int64_t q_offset, int64_t window = 0) {
  const int64_t group = n_head / n_kv_head;
  for (int64_t h = 0; h < n_head; ++h) {
    const int64_t kh = h / group;
    for (int64_t i = 0; i < Tq; ++i) {
      const T* qi = q + i * ldq + h * hd;
      const T* doi = dout + i * lddo + h * hd;
      T* dqi = dq + i * lddq + h * hd;
      T D = 0;
      for (int64_t d = 0; d < hd; ++d) D += doi[d] * out[i * ldo + h * hd + d];
      for (int64_t d = 0; d < hd; ++d) dqi[d] = 0;
      const int64_t last = attention_last_key(i, Tk, causal, q_offset);
      for (int64_t j = attention_first_key(i, causal, q_offset, window); j <= last; ++j) {
        const T* kj = k + j * ldk + kh * hd;
        const T* vj = v + j * ldv + kh * hd;
        T s = 0, dp = 0;
        for (int64_t d = 0; d < hd; ++d) {
          s += qi[d] * kj[d];
          dp += doi[d] * vj[d];
        }
        const T p = std::exp(scale * s - lse[h * Tq + i]);
        const T ds = p * (dp - D);
        for (int64_t d = 0; d < hd; ++d) {
          dqi[d] += scale * ds * kj[d];
          dk[j * lddk + kh * hd + d] += scale * ds * qi[d];
          dv[j * lddv + kh * hd + d] += p * doi[d];
        }
      }
    }
  }
}

}  // namespace ref
}  // namespace iris::ops
