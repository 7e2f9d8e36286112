// Qwen2-VL / Qwen2.5-VL vision block: forward and the training pair.
#include "nn/vit_rope_block.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/elementwise.h"

namespace iris::nn {

namespace {

void check_segments(const Segments& seg, int64_t T) {
  IRIS_CHECK(seg.size() >= 2 && seg.front() == 0 && seg.back() == T, "vision block: segments must cover 0..", T);
  for (size_t i = 1; i < seg.size(); ++i)
    IRIS_CHECK(seg[i] > seg[i - 1], "vision block: empty or unordered segment ending at ", seg[i]);
}

// Attention of every segment over itself: q, k, v inside qkv (T, 3D), out (T, D); lse (H, T) per segment.
void segment_attention(const float* qkv, float* out, float* lse, int64_t D, int n_head, const Segments& seg) {
  const int64_t hd = D / n_head;
  for (size_t i = 0; i + 1 < seg.size(); ++i) {
    const int64_t a = seg[i], n = seg[i + 1] - seg[i];
    const float* base = qkv + a * 3 * D;
    ops::attention_forward(base, 3 * D, base + D, 3 * D, base + 2 * D, 3 * D, out + a * D, D, n, n, n_head, n_head,
                           hd, 1.0f / std::sqrt(float(hd)), false, 0, lse ? lse + a * n_head : nullptr);
  }
}

}  // namespace

void RopeViTBlock::forward(float* h, int64_t T, const ops::RopeTable& rope, const Segments& seg, Scratch& s,
                           const Tap& tap, int il) const {
  const int64_t D = dim(), I = mlp_dim(), hd = D / n_head;
  check_segments(seg, T);
  IRIS_CHECK(rope.T == T, "vision block: a rotary table of ", rope.T, " rows for ", T, " tokens");
  float* xn = Scratch::get(s.a, size_t(T * D));
  float* qkvb = Scratch::get(s.b, size_t(T * 3 * D));
  float* ab = Scratch::get(s.c, size_t(T * std::max(D, I)));
  float* ub = Scratch::get(s.d, size_t(gated ? T * I : 1));
  if (rms_norm) rn1.forward(h, xn, T); else ln1.forward(h, xn, T);
  qkv.forward(xn, T, qkvb);
  ops::rope_apply_table(qkvb, 3 * D, rope, n_head, hd);      // q
  ops::rope_apply_table(qkvb + D, 3 * D, rope, n_head, hd);  // k
  segment_attention(qkvb, ab, nullptr, D, n_head, seg);
  if (tap) tap("attn_out", il, ab, T, D);
  proj.forward(ab, T, h, /*accumulate=*/true);
  if (rms_norm) rn2.forward(h, xn, T); else ln2.forward(h, xn, T);
  if (gated) {
    gate.forward(xn, T, ab);
    up.forward(xn, T, ub);
    ops::swiglu_forward(ab, ub, ab, T * I);
    down.forward(ab, T, h, /*accumulate=*/true);
  } else {
    fc1.forward(xn, T, ab);
    ops::activation_forward(act, ab, ab, T * I);
    fc2.forward(ab, T, h, /*accumulate=*/true);
  }
  if (tap) tap("layer_out", il, h, T, D);
}

void RopeViTBlock::forward_train(float* h, int64_t T, const ops::RopeTable& rope, const Segments& seg,
                                 RopeViTBlockActs& a) const {
  const int64_t D = dim(), I = mlp_dim(), hd = D / n_head;
  check_segments(seg, T);
  IRIS_CHECK(rope.T == T, "vision block: a rotary table of ", rope.T, " rows for ", T, " tokens");
  a.x.assign(h, h + T * D);
  if (rms_norm) {
    rn1.forward_train(h, sized(a.xn1, T * D), sized(a.rstd1, T), T);
  } else {
    ln1.forward_train(h, sized(a.xn1, T * D), sized(a.mean1, T), sized(a.rstd1, T), T);
  }
  qkv.forward_train(a.xn1.data(), T, sized(a.qkv, T * 3 * D));
  ops::rope_apply_table(a.qkv.data(), 3 * D, rope, n_head, hd);
  ops::rope_apply_table(a.qkv.data() + D, 3 * D, rope, n_head, hd);
  segment_attention(a.qkv.data(), sized(a.att, T * D), sized(a.lse, n_head * T), D, n_head, seg);
  proj.forward_train(a.att.data(), T, h, /*accumulate=*/true);
  a.h1.assign(h, h + T * D);
  if (rms_norm) {
    rn2.forward_train(h, sized(a.xn2, T * D), sized(a.rstd2, T), T);
  } else {
    ln2.forward_train(h, sized(a.xn2, T * D), sized(a.mean2, T), sized(a.rstd2, T), T);
  }
  std::vector<float> m(size_t(T * I));
  if (gated) {
    gate.forward_train(a.xn2.data(), T, sized(a.f1, T * I));
    up.forward_train(a.xn2.data(), T, sized(a.f2, T * I));
    ops::swiglu_forward(a.f1.data(), a.f2.data(), m.data(), T * I);
    down.forward_train(m.data(), T, h, /*accumulate=*/true);
  } else {
    fc1.forward_train(a.xn2.data(), T, sized(a.f1, T * I));
    ops::activation_forward(act, a.f1.data(), m.data(), T * I);
    fc2.forward_train(m.data(), T, h, /*accumulate=*/true);
  }
}

void RopeViTBlock::backward(const RopeViTBlockActs& a, int64_t T, const ops::RopeTable& rope, const Segments& seg,
                            float* dh, Scratch& s) const {
  const int64_t D = dim(), I = mlp_dim(), hd = D / n_head;
  check_segments(seg, T);
  IRIS_CHECK(rope.T == T, "vision block: a rotary table of ", rope.T, " rows for ", T, " tokens");
  float* dm = Scratch::get(s.a, size_t(T * I));                // (T, I) d of the MLP's inner activation
  float* tmp = Scratch::get(s.b, size_t(T * std::max(D, I)));  // (T, I): the inner activation, later (T, D): d att
  float* dxn = Scratch::get(s.c, size_t(T * D));
  // MLP: h2 = h1 + mlp(norm2(h1)).
  if (gated) {
    float* dg = Scratch::get(s.d, size_t(T * I));
    float* du = Scratch::get(s.e, size_t(T * I));
    ops::swiglu_forward(a.f1.data(), a.f2.data(), tmp, T * I);
    down.backward(tmp, dh, T, dm);
    ops::swiglu_backward(a.f1.data(), a.f2.data(), dm, dg, du, T * I);
    gate.backward(a.xn2.data(), dg, T, dxn);
    up.backward(a.xn2.data(), du, T, dxn, /*accumulate_dx=*/true);
  } else {
    ops::activation_forward(act, a.f1.data(), tmp, T * I);
    fc2.backward(tmp, dh, T, dm);
    ops::activation_backward(act, a.f1.data(), dm, dm, T * I);
    fc1.backward(a.xn2.data(), dm, T, dxn);
  }
  if (rms_norm) {
    rn2.backward(a.h1.data(), a.rstd2.data(), dxn, dxn, T);
  } else {
    ln2.backward(a.h1.data(), a.mean2.data(), a.rstd2.data(), dxn, dxn, T);
  }
  ops::add_inplace(dh, dxn, T * D);  // dh is now d h1
  // Attention: h1 = x + proj(attn(rope(q), rope(k), v)), qkv = qkv(norm1(x)).
  float* datt = tmp;
  proj.backward(a.att.data(), dh, T, datt);
  float* dqkv = Scratch::get(s.f, size_t(T * 3 * D));
  std::fill_n(dqkv, T * 3 * D, 0.0f);
  for (size_t i = 0; i + 1 < seg.size(); ++i) {
    const int64_t b = seg[i], n = seg[i + 1] - seg[i];
    const float* q = a.qkv.data() + b * 3 * D;
    float* dq = dqkv + b * 3 * D;
    ops::attention_backward(q, 3 * D, q + D, 3 * D, q + 2 * D, 3 * D, a.att.data() + b * D, D,
                            a.lse.data() + b * n_head, datt + b * D, D, dq, 3 * D, dq + D, 3 * D, dq + 2 * D, 3 * D, n,
                            n, n_head, n_head, hd, 1.0f / std::sqrt(float(hd)), false, 0);
  }
  ops::rope_apply_table_backward(dqkv, 3 * D, rope, n_head, hd);
  ops::rope_apply_table_backward(dqkv + D, 3 * D, rope, n_head, hd);
  qkv.backward(a.xn1.data(), dqkv, T, dxn);
  if (rms_norm) {
    rn1.backward(a.x.data(), a.rstd1.data(), dxn, dxn, T);
  } else {
    ln1.backward(a.x.data(), a.mean1.data(), a.rstd1.data(), dxn, dxn, T);
  }
  ops::add_inplace(dh, dxn, T * D);
}

bool RopeViTBlock::trains() const {
  bool t = qkv.trains() || proj.trains();
  t = t || (rms_norm ? rn1.trains() || rn2.trains() : ln1.trains() || ln2.trains());
  t = t || (gated ? gate.trains() || up.trains() || down.trains() : fc1.trains() || fc2.trains());
  return t;
}

}  // namespace iris::nn
