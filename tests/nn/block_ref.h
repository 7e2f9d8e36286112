// Double-precision references of the layers and blocks (built from the ops' naive references), over weights kept
// by name in a map so that tests can perturb any entry for central differences. Shared by the block tests
// (tests/nn) and the model-level gradient tests (tests/train).
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "ops/activations.h"
#include "ops/attention.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace iris::test {

using Weights = std::map<std::string, std::vector<double>>;  // HF name -> values (row-major)

// LoRA settings a reference linear applies when the weights hold "<peft_prefix><module>.lora_A.weight".
struct RefLoraOpts {
  std::string peft_prefix = "base_model.model.";
  double scale = 0;
  float dropout = 0;
  std::map<std::string, uint64_t> seeds;  // module -> dropout seed
};

inline const std::vector<double>& at(const Weights& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end()) throw std::runtime_error("reference: no weight " + name);
  return it->second;
}

// y (M, out) = x (M, in) W^T + b + scale * dropout(x) A^T B^T.
inline void ref_linear(const Weights& w, const std::string& module, const double* x, int64_t M, int64_t in,
                       int64_t out, double* y, const RefLoraOpts* lora = nullptr) {
  const double* b = w.count(module + ".bias") ? at(w, module + ".bias").data() : nullptr;
  ops::ref::linear_forward(x, at(w, module + ".weight").data(), b, y, M, in, out);
  const std::string a_name = (lora ? lora->peft_prefix : "") + module + ".lora_A.weight";
  if (!lora || !w.count(a_name)) return;
  const std::vector<double>& A = at(w, a_name);
  const std::vector<double>& B = at(w, lora->peft_prefix + module + ".lora_B.weight");
  const int64_t r = int64_t(A.size()) / in;
  std::vector<double> xd(x, x + M * in), t(size_t(M * r)), z(size_t(M * out));
  if (lora->dropout > 0) {
    const uint64_t seed = lora->seeds.count(module) ? lora->seeds.at(module) : 0;
    for (int64_t i = 0; i < M * in; ++i)
      xd[size_t(i)] = nn::lora_dropout_keep(seed, i, lora->dropout) ? xd[size_t(i)] / (1.0 - double(lora->dropout)) : 0.0;
  }
  ops::ref::linear_forward(xd.data(), A.data(), static_cast<const double*>(nullptr), t.data(), M, in, r);
  ops::ref::linear_forward(t.data(), B.data(), static_cast<const double*>(nullptr), z.data(), M, r, out);
  for (int64_t i = 0; i < M * out; ++i) y[i] += lora->scale * z[size_t(i)];
}

inline void ref_layernorm(const Weights& w, const std::string& module, const double* x, double* y, int64_t rows,
                          int64_t dim, double eps) {
  ops::ref::layernorm_forward(x, at(w, module + ".weight").data(), at(w, module + ".bias").data(), y,
                              static_cast<double*>(nullptr), static_cast<double*>(nullptr), rows, dim, eps);
}

inline void ref_rmsnorm(const Weights& w, const std::string& module, const double* x, double* y, int64_t rows,
                        int64_t dim, double eps) {
  ops::ref::rmsnorm_forward(x, at(w, module + ".weight").data(), y, static_cast<double*>(nullptr), rows, dim, eps);
}

struct RefVitShape {
  int64_t D = 0, I = 0, n_head = 1;
  double eps = 1e-5;
  ops::Activation act = ops::Activation::QuickGelu;
};

// CLIP encoder layer under `p` ("...encoder.layers.N."): h (T, D) in place.
inline void ref_vit_block(const Weights& w, const std::string& p, const RefVitShape& s, std::vector<double>& h,
                          int64_t T, const RefLoraOpts* lora = nullptr) {
  const int64_t D = s.D, I = s.I, hd = D / s.n_head;
  std::vector<double> xn(size_t(T * D)), q(xn.size()), k(xn.size()), v(xn.size()), att(xn.size()), o(xn.size());
  ref_layernorm(w, p + "layer_norm1", h.data(), xn.data(), T, D, s.eps);
  ref_linear(w, p + "self_attn.q_proj", xn.data(), T, D, D, q.data(), lora);
  ref_linear(w, p + "self_attn.k_proj", xn.data(), T, D, D, k.data(), lora);
  ref_linear(w, p + "self_attn.v_proj", xn.data(), T, D, D, v.data(), lora);
  ops::ref::attention_forward(q.data(), D, k.data(), D, v.data(), D, att.data(), D, T, T, s.n_head, s.n_head, hd,
                              1.0 / std::sqrt(double(hd)), false, 0, static_cast<double*>(nullptr));
  ref_linear(w, p + "self_attn.out_proj", att.data(), T, D, D, o.data(), lora);
  for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
  std::vector<double> f(size_t(T * I)), y(size_t(T * D));
  ref_layernorm(w, p + "layer_norm2", h.data(), xn.data(), T, D, s.eps);
  ref_linear(w, p + "mlp.fc1", xn.data(), T, D, I, f.data(), lora);
  ops::ref::activation_forward(s.act, f.data(), f.data(), T * I);
  ref_linear(w, p + "mlp.fc2", f.data(), T, I, D, y.data(), lora);
  for (size_t i = 0; i < h.size(); ++i) h[i] += y[i];
}

struct RefDecoderShape {
  int64_t D = 0, I = 0, n_head = 1, n_kv_head = 1, head_dim = 1;
  double eps = 1e-6;
  std::vector<float> inv_freq;  // (head_dim / 2)
};

// Llama decoder layer under `p` ("...layers.N."), causal over positions 0..T-1: h (T, D) in place.
inline void ref_decoder_block(const Weights& w, const std::string& p, const RefDecoderShape& s,
                              std::vector<double>& h, int64_t T, const RefLoraOpts* lora = nullptr) {
  const int64_t D = s.D, I = s.I, hd = s.head_dim, qd = s.n_head * hd, kvd = s.n_kv_head * hd;
  std::vector<int64_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = t;
  std::vector<double> xn(size_t(T * D)), q(size_t(T * qd)), k(size_t(T * kvd)), v(size_t(T * kvd)),
      att(size_t(T * qd)), o(size_t(T * D));
  ref_rmsnorm(w, p + "input_layernorm", h.data(), xn.data(), T, D, s.eps);
  ref_linear(w, p + "self_attn.q_proj", xn.data(), T, D, qd, q.data(), lora);
  ref_linear(w, p + "self_attn.k_proj", xn.data(), T, D, kvd, k.data(), lora);
  ref_linear(w, p + "self_attn.v_proj", xn.data(), T, D, kvd, v.data(), lora);
  ops::ref::rope_forward(q.data(), qd, pos.data(), s.inv_freq.data(), T, s.n_head, hd, hd);
  ops::ref::rope_forward(k.data(), kvd, pos.data(), s.inv_freq.data(), T, s.n_kv_head, hd, hd);
  ops::ref::attention_forward(q.data(), qd, k.data(), kvd, v.data(), kvd, att.data(), qd, T, T, s.n_head, s.n_kv_head,
                              hd, 1.0 / std::sqrt(double(hd)), true, 0, static_cast<double*>(nullptr));
  ref_linear(w, p + "self_attn.o_proj", att.data(), T, qd, D, o.data(), lora);
  for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
  std::vector<double> g(size_t(T * I)), u(size_t(T * I)), y(size_t(T * D));
  ref_rmsnorm(w, p + "post_attention_layernorm", h.data(), xn.data(), T, D, s.eps);
  ref_linear(w, p + "mlp.gate_proj", xn.data(), T, D, I, g.data(), lora);
  ref_linear(w, p + "mlp.up_proj", xn.data(), T, D, I, u.data(), lora);
  ops::ref::swiglu_forward(g.data(), u.data(), g.data(), T * I);
  ref_linear(w, p + "mlp.down_proj", g.data(), T, I, D, y.data(), lora);
  for (size_t i = 0; i < h.size(); ++i) h[i] += y[i];
}

// Central difference of f with respect to v[i] (restored afterwards).
template <typename F>
double central_difference(std::vector<double>& v, size_t i, double h, F&& f) {
  const double x0 = v[i];
  v[i] = x0 + h;
  const double fp = f();
  v[i] = x0 - h;
  const double fm = f();
  v[i] = x0;
  return (fp - fm) / (2 * h);
}

}  // namespace iris::test

// ---- Qwen2-VL / Qwen2.5-VL rotary vision block (nn::RopeViTBlock), for tests/nn and tests/models ---------
namespace iris::test {

struct RefRopeVitShape {
  int64_t D = 0, I = 0, n_head = 1;
  bool rms_norm = false;  // RMSNorm (weight only) instead of LayerNorm
  bool gated = false;     // down_proj(silu(gate_proj(x)) * up_proj(x)) instead of fc2(act(fc1(x)))
  ops::Activation act = ops::Activation::QuickGelu;
  double eps = 1e-6;
};

// The block under `p` ("visual.blocks.N."): h (T, D) in place. cos, sin (T, half): each token's rotary
// cosines and sines, applied rotate-half to the first 2 * half dims of every head of q and k (qkv's output
// columns: q, k, v). seg: 0 = seg[0] < ... < seg.back() = T; a row attends, non-causally, to the rows of its
// own segment only (a mask over the whole sequence, not a loop over segments).
inline void ref_rope_vit_block(const Weights& w, const std::string& p, const RefRopeVitShape& s,
                               std::vector<double>& h, int64_t T, const std::vector<double>& cos,
                               const std::vector<double>& sin, const std::vector<int64_t>& seg,
                               const RefLoraOpts* lora = nullptr) {
  const int64_t D = s.D, I = s.I, H = s.n_head, hd = D / H, half = int64_t(cos.size()) / T;
  auto norm = [&](const std::string& m, const double* x, double* y) {
    if (s.rms_norm)
      ref_rmsnorm(w, p + m, x, y, T, D, s.eps);
    else
      ref_layernorm(w, p + m, x, y, T, D, s.eps);
  };
  std::vector<double> xn(size_t(T * D)), qkv(size_t(T * 3 * D)), att(size_t(T * D)), o(size_t(T * D));
  norm("norm1", h.data(), xn.data());
  ref_linear(w, p + "attn.qkv", xn.data(), T, D, 3 * D, qkv.data(), lora);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t part = 0; part < 2; ++part)  // q, then k
      for (int64_t hh = 0; hh < H; ++hh)
        for (int64_t i = 0; i < half; ++i) {
          double* x = qkv.data() + t * 3 * D + part * D + hh * hd;
          const double c = cos[size_t(t * half + i)], sn = sin[size_t(t * half + i)], a = x[i],
                       b = x[i + half];
          x[i] = a * c - b * sn;
          x[i + half] = b * c + a * sn;
        }
  std::vector<int64_t> sid(size_t(T), -1);
  for (size_t k = 0; k + 1 < seg.size(); ++k)
    for (int64_t t = seg[k]; t < seg[k + 1]; ++t) sid[size_t(t)] = int64_t(k);
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> pr(static_cast<size_t>(T));
  for (int64_t hh = 0; hh < H; ++hh)
    for (int64_t i = 0; i < T; ++i) {
      const double* q = qkv.data() + i * 3 * D + hh * hd;
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < T; ++j) {
        if (sid[size_t(j)] != sid[size_t(i)]) continue;
        const double* k = qkv.data() + j * 3 * D + D + hh * hd;
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += q[e] * k[e];
        pr[size_t(j)] = scale * d;
        m = std::max(m, pr[size_t(j)]);
      }
      for (int64_t j = 0; j < T; ++j)
        if (sid[size_t(j)] == sid[size_t(i)]) sum += (pr[size_t(j)] = std::exp(pr[size_t(j)] - m));
      for (int64_t e = 0; e < hd; ++e) {
        double acc = 0;
        for (int64_t j = 0; j < T; ++j)
          if (sid[size_t(j)] == sid[size_t(i)])
            acc += pr[size_t(j)] / sum * qkv[size_t(j * 3 * D + 2 * D + hh * hd + e)];
        att[size_t(i * D + hh * hd + e)] = acc;
      }
    }
  ref_linear(w, p + "attn.proj", att.data(), T, D, D, o.data(), lora);
  for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
  std::vector<double> f(size_t(T * I)), u(size_t(T * I)), y(size_t(T * D));
  norm("norm2", h.data(), xn.data());
  if (s.gated) {
    ref_linear(w, p + "mlp.gate_proj", xn.data(), T, D, I, f.data(), lora);
    ref_linear(w, p + "mlp.up_proj", xn.data(), T, D, I, u.data(), lora);
    for (size_t i = 0; i < f.size(); ++i) f[i] = ops::ref::silu(f[i]) * u[i];
    ref_linear(w, p + "mlp.down_proj", f.data(), T, I, D, y.data(), lora);
  } else {
    ref_linear(w, p + "mlp.fc1", xn.data(), T, D, I, f.data(), lora);
    for (double& v : f) v = ops::ref::activation(s.act, v);
    ref_linear(w, p + "mlp.fc2", f.data(), T, I, D, y.data(), lora);
  }
  for (size_t i = 0; i < h.size(); ++i) h[i] += y[i];
}

}  // namespace iris::test
