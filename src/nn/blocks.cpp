// Forward passes of the transformer blocks, and their training forward/backward pairs.
#include "nn/blocks.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/rope.h"

namespace iris::nn {

void ViTBlock::forward(float* h, int64_t T, Scratch& s, const Tap& tap, int il, int64_t n_keys) const {
  const int64_t D = q.in_features(), I = fc1.out_features(), hd = D / n_head;
  if (n_keys <= 0) n_keys = T;
  IRIS_CHECK(n_keys <= T, "ViTBlock: ", n_keys, " keys of ", T, " tokens");
  float* xn = Scratch::get(s.a, size_t(T * D));
  float* qb = Scratch::get(s.b, size_t(T * D));
  float* kb = Scratch::get(s.c, size_t(T * D));
  float* vb = Scratch::get(s.d, size_t(T * D));
  float* ab = Scratch::get(s.e, size_t(T * std::max(D, I)));
  ln1.forward(h, xn, T);
  q.forward(xn, T, qb);
  k.forward(xn, T, kb);
  v.forward(xn, T, vb);
  ops::attention_forward(qb, D, kb, D, vb, D, ab, D, T, n_keys, n_head, n_head, hd, 1.0f / std::sqrt(float(hd)), false,
                         0, nullptr);
  if (tap) tap("attn_out", il, ab, T, D);
  o.forward(ab, T, h, /*accumulate=*/true);
  ln2.forward(h, xn, T);
  fc1.forward(xn, T, ab);
  ops::activation_forward(act, ab, ab, T * I);
  fc2.forward(ab, T, h, /*accumulate=*/true);
  if (tap) tap("layer_out", il, h, T, D);
}

void DecoderBlock::forward(float* h, int64_t T, const ops::RopeTable& rope, int64_t pos0, KVCache& cache, int il,
                           Scratch& s, const Tap& tap) const {
  const int64_t D = q.in_features(), qd = int64_t(n_head) * head_dim, kvd = int64_t(n_kv_head) * head_dim;
  const int64_t I = gate.out_features();
  IRIS_ASSERT(kvd == cache.kv_dim() && pos0 + T <= cache.max_tokens() && rope.T == T);
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
  ops::rope_apply_table(qb, qd, rope, n_head, head_dim);
  ops::rope_apply_table(kc, kvd, rope, n_kv_head, head_dim);
  ops::attention_forward(qb, qd, cache.k(il), kvd, cache.v(il), kvd, ab, qd, T, pos0 + T, n_head, n_kv_head, head_dim,
                         1.0f / std::sqrt(float(head_dim)), true, pos0, nullptr, window);
  if (tap) tap("attn_out", il, ab, T, qd);
  o.forward(ab, T, h, /*accumulate=*/true);
  mlp_norm.forward(h, xn, T);
  gate.forward(xn, T, g);
  up.forward(xn, T, u);
  ops::swiglu_forward(g, u, g, T * I);
  down.forward(g, T, h, /*accumulate=*/true);
  if (tap) tap("layer_out", il, h, T, D);
}

void DecoderBlock::forward_batch(float* h, int64_t n, const ops::RopeTable& rope, KVCache* const* caches, int il,
                                 Scratch& s) const {
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
  IRIS_ASSERT(rope.T == n);
  ops::rope_apply_table(qb, qd, rope, n_head, head_dim);
  ops::rope_apply_table(g, kvd, rope, n_kv_head, head_dim);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = caches[i]->size();
    IRIS_ASSERT(slot < caches[i]->max_tokens());
    std::copy_n(g + i * kvd, kvd, caches[i]->k(il) + slot * kvd);
    std::copy_n(u + i * kvd, kvd, caches[i]->v(il) + slot * kvd);
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = caches[i]->size();
    ops::attention_forward(qb + i * qd, qd, caches[i]->k(il), kvd, caches[i]->v(il), kvd, ab + i * qd, qd, 1,
                           slot + 1, n_head, n_kv_head, head_dim, 1.0f / std::sqrt(float(head_dim)), true, slot,
                           nullptr, window);
  }
  o.forward(ab, n, h, /*accumulate=*/true);
  mlp_norm.forward(h, xn, n);
  gate.forward(xn, n, g);
  up.forward(xn, n, u);
  ops::swiglu_forward(g, u, g, n * I);
  down.forward(g, n, h, /*accumulate=*/true);
}

// ---- training ------------------------------------------------------------------------------------------

namespace {

float* zeroed(std::vector<float>& v, int64_t n) {
  float* p = Scratch::get(v, size_t(n));
  std::fill_n(p, n, 0.0f);
  return p;
}

}  // namespace

void ViTBlock::forward_train(float* h, int64_t T, ViTBlockActs& a) const {
  const int64_t D = q.in_features(), I = fc1.out_features(), hd = D / n_head;
  a.x.assign(h, h + T * D);
  ln1.forward_train(h, sized(a.xn1, T * D), sized(a.mean1, T), sized(a.rstd1, T), T);
  q.forward_train(a.xn1.data(), T, sized(a.q, T * D));
  k.forward_train(a.xn1.data(), T, sized(a.k, T * D));
  v.forward_train(a.xn1.data(), T, sized(a.v, T * D));
  ops::attention_forward(a.q.data(), D, a.k.data(), D, a.v.data(), D, sized(a.att, T * D), D, T, T, n_head, n_head, hd,
                         1.0f / std::sqrt(float(hd)), false, 0, sized(a.lse, n_head * T));
  o.forward_train(a.att.data(), T, h, /*accumulate=*/true);
  a.h1.assign(h, h + T * D);
  ln2.forward_train(h, sized(a.xn2, T * D), sized(a.mean2, T), sized(a.rstd2, T), T);
  fc1.forward_train(a.xn2.data(), T, sized(a.f1, T * I));
  std::vector<float> act_out(size_t(T * I));
  ops::activation_forward(act, a.f1.data(), act_out.data(), T * I);
  fc2.forward_train(act_out.data(), T, h, /*accumulate=*/true);
}

void ViTBlock::backward(const ViTBlockActs& a, int64_t T, float* dh, Scratch& s) const {
  const int64_t D = q.in_features(), I = fc1.out_features(), hd = D / n_head;
  float* dI = Scratch::get(s.a, size_t(T * I));                // (T, I)
  float* tmp = Scratch::get(s.b, size_t(T * std::max(D, I)));  // (T, I): fc2's input, later (T, D): d att
  float* dxn = Scratch::get(s.c, size_t(T * D));               // (T, D)
  // MLP: h2 = h1 + fc2(act(fc1(ln2(h1)))).
  ops::activation_forward(act, a.f1.data(), tmp, T * I);
  fc2.backward(tmp, dh, T, dI);
  ops::activation_backward(act, a.f1.data(), dI, dI, T * I);
  fc1.backward(a.xn2.data(), dI, T, dxn);
  ln2.backward(a.h1.data(), a.mean2.data(), a.rstd2.data(), dxn, dxn, T);
  ops::add_inplace(dh, dxn, T * D);  // dh is now d h1
  // Attention: h1 = x + out_proj(attn(q, k, v)(ln1(x))).
  float* datt = tmp;
  o.backward(a.att.data(), dh, T, datt);
  float* dq = Scratch::get(s.d, size_t(T * D));
  float* dk = zeroed(s.e, T * D);
  float* dv = zeroed(s.f, T * D);
  ops::attention_backward(a.q.data(), D, a.k.data(), D, a.v.data(), D, a.att.data(), D, a.lse.data(), datt, D, dq, D,
                          dk, D, dv, D, T, T, n_head, n_head, hd, 1.0f / std::sqrt(float(hd)), false, 0);
  q.backward(a.xn1.data(), dq, T, dxn);
  k.backward(a.xn1.data(), dk, T, dxn, /*accumulate_dx=*/true);
  v.backward(a.xn1.data(), dv, T, dxn, /*accumulate_dx=*/true);
  ln1.backward(a.x.data(), a.mean1.data(), a.rstd1.data(), dxn, dxn, T);
  ops::add_inplace(dh, dxn, T * D);
}

bool ViTBlock::trains() const {
  return ln1.trains() || ln2.trains() || q.trains() || k.trains() || v.trains() || o.trains() || fc1.trains() ||
         fc2.trains();
}

void DecoderBlock::forward_train(float* h, int64_t T, const ops::RopeTable& rope, DecoderBlockActs& a) const {
  const int64_t D = q.in_features(), qd = int64_t(n_head) * head_dim, kvd = int64_t(n_kv_head) * head_dim;
  const int64_t I = gate.out_features();
  a.x.assign(h, h + T * D);
  attn_norm.forward_train(h, sized(a.xn1, T * D), sized(a.rstd1, T), T);
  q.forward_train(a.xn1.data(), T, sized(a.q, T * qd));
  k.forward_train(a.xn1.data(), T, sized(a.k, T * kvd));
  v.forward_train(a.xn1.data(), T, sized(a.v, T * kvd));
  ops::rope_apply_table(a.q.data(), qd, rope, n_head, head_dim);
  ops::rope_apply_table(a.k.data(), kvd, rope, n_kv_head, head_dim);
  ops::attention_forward(a.q.data(), qd, a.k.data(), kvd, a.v.data(), kvd, sized(a.att, T * qd), qd, T, T, n_head,
                         n_kv_head, head_dim, 1.0f / std::sqrt(float(head_dim)), true, 0, sized(a.lse, n_head * T),
                         window);
  o.forward_train(a.att.data(), T, h, /*accumulate=*/true);
  a.h1.assign(h, h + T * D);
  mlp_norm.forward_train(h, sized(a.xn2, T * D), sized(a.rstd2, T), T);
  gate.forward_train(a.xn2.data(), T, sized(a.g, T * I));
  up.forward_train(a.xn2.data(), T, sized(a.u, T * I));
  std::vector<float> sw(size_t(T * I));
  ops::swiglu_forward(a.g.data(), a.u.data(), sw.data(), T * I);
  down.forward_train(sw.data(), T, h, /*accumulate=*/true);
}

void DecoderBlock::backward(const DecoderBlockActs& a, int64_t T, const ops::RopeTable& rope, float* dh,
                            Scratch& s) const {
  const int64_t D = q.in_features(), qd = int64_t(n_head) * head_dim, kvd = int64_t(n_kv_head) * head_dim;
  const int64_t I = gate.out_features();
  // MLP: h2 = h1 + down(silu(gate(m)) * up(m)), m = mlp_norm(h1).
  float* dsw = Scratch::get(s.a, size_t(T * std::max(I, qd)));  // (T, I), later (T, qd): d att
  float* dg = Scratch::get(s.b, size_t(T * I));                  // (T, I): first silu(g) * u, then d gate
  float* du = Scratch::get(s.f, size_t(T * std::max(I, kvd)));   // (T, I), later (T, kvd): d v
  float* dxn = Scratch::get(s.c, size_t(T * D));
  ops::swiglu_forward(a.g.data(), a.u.data(), dg, T * I);
  down.backward(dg, dh, T, dsw);
  ops::swiglu_backward(a.g.data(), a.u.data(), dsw, dg, du, T * I);
  gate.backward(a.xn2.data(), dg, T, dxn);
  up.backward(a.xn2.data(), du, T, dxn, /*accumulate_dx=*/true);
  mlp_norm.backward(a.h1.data(), a.rstd2.data(), dxn, dxn, T);
  ops::add_inplace(dh, dxn, T * D);  // dh is now d h1
  // Attention: h1 = x + o(attn(rope(q), rope(k), v)), q, k, v from attn_norm(x).
  float* datt = dsw;
  o.backward(a.att.data(), dh, T, datt);
  float* dq = Scratch::get(s.d, size_t(T * qd));
  float* dk = zeroed(s.e, T * kvd);
  float* dv = zeroed(s.f, T * kvd);
  ops::attention_backward(a.q.data(), qd, a.k.data(), kvd, a.v.data(), kvd, a.att.data(), qd, a.lse.data(), datt, qd,
                          dq, qd, dk, kvd, dv, kvd, T, T, n_head, n_kv_head, head_dim,
                          1.0f / std::sqrt(float(head_dim)), true, 0, window);
  ops::rope_apply_table_backward(dq, qd, rope, n_head, head_dim);
  ops::rope_apply_table_backward(dk, kvd, rope, n_kv_head, head_dim);
  q.backward(a.xn1.data(), dq, T, dxn);
  k.backward(a.xn1.data(), dk, T, dxn, /*accumulate_dx=*/true);
  v.backward(a.xn1.data(), dv, T, dxn, /*accumulate_dx=*/true);
  attn_norm.backward(a.x.data(), a.rstd1.data(), dxn, dxn, T);
  ops::add_inplace(dh, dxn, T * D);
}

bool DecoderBlock::trains() const {
  return attn_norm.trains() || mlp_norm.trains() || q.trains() || k.trains() || v.trains() || o.trains() ||
         gate.trains() || up.trains() || down.trains();
}

}  // namespace iris::nn
