// Forward passes of the transformer blocks.
#include "nn/blocks.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/rope.h"

namespace iris::nn {

void ViTBlock::forward(float* h, int64_t T, Scratch& s, const Tap& tap, int il) const {
  const int64_t D = q.in_features(), I = fc1.out_features(), hd = D / n_head;
  float* xn = Scratch::get(s.a, size_t(T * D));
  float* qb = Scratch::get(s.b, size_t(T * D));
  float* kb = Scratch::get(s.c, size_t(T * D));
  float* vb = Scratch::get(s.d, size_t(T * D));
  float* ab = Scratch::get(s.e, size_t(T * std::max(D, I)));
  ln1.forward(h, xn, T);
  q.forward(xn, T, qb);
  k.forward(xn, T, kb);
  v.forward(xn, T, vb);
  ops::attention_forward(qb, D, kb, D, vb, D, ab, D, T, T, n_head, n_head, hd, 1.0f / std::sqrt(float(hd)), false, 0,
                         nullptr);
  if (tap) tap("attn_out", il, ab, T, D);
  o.forward(ab, T, h, /*accumulate=*/true);
  ln2.forward(h, xn, T);
  fc1.forward(xn, T, ab);
  ops::activation_forward(act, ab, ab, T * I);
  fc2.forward(ab, T, h, /*accumulate=*/true);
  if (tap) tap("layer_out", il, h, T, D);
}

void DecoderBlock::forward(float* h, int64_t T, const int64_t* pos, int64_t pos0, const float* inv_freq,
                           KVCache& cache, int il, Scratch& s, const Tap& tap) const {
  const int64_t D = q.in_features(), qd = int64_t(n_head) * head_dim, kvd = int64_t(n_kv_head) * head_dim;
  const int64_t I = gate.out_features();
  IRIS_ASSERT(kvd == cache.kv_dim() && pos0 + T <= cache.max_tokens());
  float* xn = Scratch::get(s.a, size_t(T * D));
  float* qb = Scratch::get(s.b, size_t(T * qd));
  float* ab = Scratch::get(s.c, size_t(T * qd));
  float* g = Scratch::get(s.d, size_t(T * I));
  float* u = Scratch::get(s.e, size_t(T * I));
  float* kc = cache.k(il) + pos0 * kvd;
  float* vc = cache.v(il) + pos0 * kvd;
  attn_norm.forward(h, xn, T);
  if (tap) tap("attn_norm", il, xn, T, D);
  q.forward(xn, T, qb);
  k.forward(xn, T, kc);
  v.forward(xn, T, vc);
  ops::rope_forward(qb, qd, pos, inv_freq, T, n_head, head_dim, head_dim);
  ops::rope_forward(kc, kvd, pos, inv_freq, T, n_kv_head, head_dim, head_dim);
  ops::attention_forward(qb, qd, cache.k(il), kvd, cache.v(il), kvd, ab, qd, T, pos0 + T, n_head, n_kv_head, head_dim,
                         1.0f / std::sqrt(float(head_dim)), true, pos0, nullptr);
  if (tap) tap("attn_out", il, ab, T, qd);
  o.forward(ab, T, h, /*accumulate=*/true);
  mlp_norm.forward(h, xn, T);
  gate.forward(xn, T, g);
  up.forward(xn, T, u);
  ops::swiglu_forward(g, u, g, T * I);
  down.forward(g, T, h, /*accumulate=*/true);
  if (tap) tap("layer_out", il, h, T, D);
}

void DecoderBlock::forward_batch(float* h, int64_t n, const int64_t* pos, const float* inv_freq,
                                 KVCache* const* caches, int il, Scratch& s) const {
  const int64_t D = q.in_features(), qd = int64_t(n_head) * head_dim, kvd = int64_t(n_kv_head) * head_dim;
  const int64_t I = gate.out_features();
  float* xn = Scratch::get(s.a, size_t(n * std::max(D, 2 * kvd)));
  float* qb = Scratch::get(s.b, size_t(n * qd));
  float* ab = Scratch::get(s.c, size_t(n * qd));
  float* g = Scratch::get(s.d, size_t(n * I));
  float* u = Scratch::get(s.e, size_t(n * I));
  attn_norm.forward(h, xn, n);
  q.forward(xn, n, qb);
  // Keys and values of all rows into g/u (free until the MLP), then into each sequence's cache.
  k.forward(xn, n, g);
  v.forward(xn, n, u);
  ops::rope_forward(qb, qd, pos, inv_freq, n, n_head, head_dim, head_dim);
  ops::rope_forward(g, kvd, pos, inv_freq, n, n_kv_head, head_dim, head_dim);
  for (int64_t i = 0; i < n; ++i) {
    IRIS_ASSERT(pos[i] < caches[i]->max_tokens());
    std::copy_n(g + i * kvd, kvd, caches[i]->k(il) + pos[i] * kvd);
    std::copy_n(u + i * kvd, kvd, caches[i]->v(il) + pos[i] * kvd);
  }
  for (int64_t i = 0; i < n; ++i)
    ops::attention_forward(qb + i * qd, qd, caches[i]->k(il), kvd, caches[i]->v(il), kvd, ab + i * qd, qd, 1,
                           pos[i] + 1, n_head, n_kv_head, head_dim, 1.0f / std::sqrt(float(head_dim)), true, pos[i],
                           nullptr);
  o.forward(ab, n, h, /*accumulate=*/true);
  mlp_norm.forward(h, xn, n);
  gate.forward(xn, n, g);
  up.forward(xn, n, u);
  ops::swiglu_forward(g, u, g, n * I);
  down.forward(g, n, h, /*accumulate=*/true);
}

}  // namespace iris::nn
