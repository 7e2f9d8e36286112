// Gradient checks of the Qwen2-VL / Qwen2.5-VL rotary vision block (nn::RopeViTBlock): the float training
// forward/backward against central differences of a double-precision reference (test::ref_rope_vit_block in
// tests/nn/block_ref.h: rotary q and k, attention masked to segments) over every entry of every tensor and of
// the input, for both variants (LayerNorm + quick_gelu MLP; RMSNorm + gated silu MLP), two or three segments
// of different lengths and random rotary angles; LoRA on qkv (with and without dropout, frozen bases); a
// frozen block still passes the input gradient. The float forward is checked against the reference, and the
// inference forward against forward_train bit for bit.
#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <random>
#include <type_traits>

#include "nn/block_ref.h"
#include "nn/vit_rope_block.h"
#include "test_util.h"

using namespace iris;

namespace rope_block_test {
namespace {

using test::Weights;
using Grads = std::map<std::string, std::vector<float>>;  // std::map: the vectors never move once created

const char* const kPeftPrefix = "base_model.model.";

struct RbRng {
  std::mt19937_64 g;
  explicit RbRng(uint64_t seed) : g(seed) {}
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(g); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(g); }
};

// Random values rounded to float (the float block sees exactly these).
void rb_fill(Weights& w, const std::string& name, int64_t n, double scale, double offset, RbRng& rng) {
  std::vector<double>& v = w[name];
  v.resize(size_t(n));
  for (auto& x : v) x = double(float(offset + scale * rng.normal()));
}

Tensor rb_tensor(const std::vector<double>& v, const Shape& s) {
  Tensor t = Tensor::empty(s);
  for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = float(v[i]);
  return t;
}

float* rb_grad(Grads& g, const std::string& name, size_t n) {
  g[name].assign(n, 0.0f);
  return g[name].data();
}

struct RbLora {
  std::vector<std::string> modules;  // module suffixes that get an adapter ("attn.qkv")
  int rank = 2;
  double scale = 1.5;
  float dropout = 0.0f;
  bool freeze_base = true;  // the adapted linears' own weight and bias frozen (PEFT)
};

bool rb_adapted(const RbLora* l, const std::string& module) {
  if (!l) return false;
  for (const auto& m : l->modules)
    if (module.size() >= m.size() && module.compare(module.size() - m.size(), m.size(), m) == 0) return true;
  return false;
}

struct RbCase {
  bool v25 = false;  // RMSNorm + gated silu MLP (Qwen2.5-VL), else LayerNorm + quick_gelu MLP (Qwen2-VL)
  int64_t D = 12, I = 20, H = 2, T = 13;
  std::vector<int64_t> seg = {0, 4, 11, 13};
  const RbLora* lora = nullptr;
  bool train_params = true;  // every tensor of the block (except adapted bases when frozen) trains
  uint64_t seed = 1;
};

struct RbResult {
  double fwd = 0, worst = 0;
  int tensors = 0;
};

RbResult rb_run(const RbCase& c, const char* what) {
  RbRng rng(c.seed);
  Weights w;
  const std::string p = "visual.blocks.0.";
  const int64_t D = c.D, I = c.I, T = c.T, hd = D / c.H, half = hd / 2;
  for (const char* n : {"norm1", "norm2"}) {
    rb_fill(w, p + n + ".weight", D, 0.2, 1.0, rng);
    if (!c.v25) rb_fill(w, p + n + ".bias", D, 0.1, 0.0, rng);
  }
  struct Lin {
    std::string name;
    int64_t out, in;
  };
  std::vector<Lin> lins = {{"attn.qkv", 3 * D, D}, {"attn.proj", D, D}};
  if (c.v25) {
    lins.push_back({"mlp.gate_proj", I, D});
    lins.push_back({"mlp.up_proj", I, D});
    lins.push_back({"mlp.down_proj", D, I});
  } else {
    lins.push_back({"mlp.fc1", I, D});
    lins.push_back({"mlp.fc2", D, I});
  }
  for (const Lin& l : lins) {
    const std::string m = p + l.name;
    rb_fill(w, m + ".weight", l.out * l.in, 1.0 / std::sqrt(double(l.in)), 0.0, rng);
    rb_fill(w, m + ".bias", l.out, 0.1, 0.0, rng);
    if (rb_adapted(c.lora, m)) {
      rb_fill(w, kPeftPrefix + m + ".lora_A.weight", c.lora->rank * l.in, 1.0 / std::sqrt(double(l.in)), 0.0,
              rng);
      rb_fill(w, kPeftPrefix + m + ".lora_B.weight", l.out * c.lora->rank, 0.3, 0.0,
              rng);  // nonzero: A has a gradient
    }
  }
  rb_fill(w, "input", T * D, 1.0, 0.0, rng);
  std::vector<float> angles(size_t(T * half));
  for (auto& a : angles) a = float(rng.uniform(-3.5, 3.5));
  std::vector<double> R(size_t(T * D));  // L = <out, R>
  for (auto& x : R) x = double(float(rng.normal()));

  // The float block over the same values.
  Grads g;
  nn::RopeViTBlock b;
  b.rms_norm = b.gated = c.v25;
  b.act = c.v25 ? ops::Activation::Silu : ops::Activation::QuickGelu;
  b.n_head = int(c.H);
  auto norm = [&](auto& n, const std::string& name) {
    n.w = rb_tensor(w.at(p + name + ".weight"), {D});
    n.eps = 1e-6f;
    if (c.train_params) n.grad_w = rb_grad(g, p + name + ".weight", size_t(D));
    if constexpr (std::is_same_v<std::decay_t<decltype(n)>, nn::LayerNorm>) {
      n.b = rb_tensor(w.at(p + name + ".bias"), {D});
      if (c.train_params) n.grad_b = rb_grad(g, p + name + ".bias", size_t(D));
    }
  };
  if (c.v25) {
    norm(b.rn1, "norm1");
    norm(b.rn2, "norm2");
  } else {
    norm(b.ln1, "norm1");
    norm(b.ln2, "norm2");
  }
  test::RefLoraOpts lo;
  uint64_t seed = 100;
  for (const Lin& l : lins) {
    const std::string m = p + l.name;
    nn::Linear lin;
    lin.w = cpu::LinearWeight(rb_tensor(w.at(m + ".weight"), {l.out, l.in}), cpu::MatmulPrecision::F32);
    lin.b = rb_tensor(w.at(m + ".bias"), {l.out});
    const bool ad = rb_adapted(c.lora, m);
    if (c.train_params && !(ad && c.lora->freeze_base)) {
      lin.grad_w = rb_grad(g, m + ".weight", size_t(l.out * l.in));
      lin.grad_b = rb_grad(g, m + ".bias", size_t(l.out));
    }
    if (ad) {
      lin.lora = std::make_unique<nn::LoraAdapter>();
      lin.lora->A = rb_tensor(w.at(kPeftPrefix + m + ".lora_A.weight"), {c.lora->rank, l.in});
      lin.lora->B = rb_tensor(w.at(kPeftPrefix + m + ".lora_B.weight"), {l.out, c.lora->rank});
      lin.lora->scale = float(c.lora->scale);
      lin.lora->dropout = c.lora->dropout;
      lin.lora->dropout_seed = ++seed;
      lin.lora->grad_A = rb_grad(g, kPeftPrefix + m + ".lora_A.weight", size_t(c.lora->rank * l.in));
      lin.lora->grad_B = rb_grad(g, kPeftPrefix + m + ".lora_B.weight", size_t(l.out * c.lora->rank));
      lo.seeds[m] = seed;
    }
    if (l.name == "attn.qkv")
      b.qkv = std::move(lin);
    else if (l.name == "attn.proj")
      b.proj = std::move(lin);
    else if (l.name == "mlp.fc1")
      b.fc1 = std::move(lin);
    else if (l.name == "mlp.fc2")
      b.fc2 = std::move(lin);
    else if (l.name == "mlp.gate_proj")
      b.gate = std::move(lin);
    else if (l.name == "mlp.up_proj")
      b.up = std::move(lin);
    else
      b.down = std::move(lin);
  }
  EXPECT_EQ(b.trains(), !g.empty()) << what;
  if (c.lora) {
    lo.scale = c.lora->scale;
    lo.dropout = c.lora->dropout;
  }

  const ops::RopeTable rope = ops::rope_table_from_angles(angles.data(), T, half);
  std::vector<double> cs(angles.size()), sn(angles.size());  // the reference's own cos / sin, in double
  for (size_t i = 0; i < angles.size(); ++i) {
    cs[i] = std::cos(double(angles[i]));
    sn[i] = std::sin(double(angles[i]));
  }
  test::RefRopeVitShape shape;
  shape.D = D;
  shape.I = I;
  shape.n_head = c.H;
  shape.rms_norm = shape.gated = c.v25;
  shape.act = b.act;
  auto ref_out = [&] {
    std::vector<double> h = w.at("input");
    test::ref_rope_vit_block(w, p, shape, h, T, cs, sn, c.seg, c.lora ? &lo : nullptr);
    return h;
  };

  RbResult res;
  // Forward: float vs double.
  std::vector<float> h(size_t(T * D));
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(w.at("input")[i]);
  const std::vector<float> x0 = h;
  nn::RopeViTBlockActs acts;
  b.forward_train(h.data(), T, rope, c.seg, acts);
  const std::vector<double> ref = ref_out();
  for (size_t i = 0; i < h.size(); ++i) res.fwd = std::max(res.fwd, std::fabs(double(h[i]) - ref[i]));
  EXPECT_LE(res.fwd, 1e-5) << what << ": forward_train vs double reference";
  if (!c.lora || c.lora->dropout == 0) {  // the inference forward computes the same function, the same way
    std::vector<float> hi = x0;
    nn::Scratch s;
    b.forward(hi.data(), T, rope, c.seg, s);
    EXPECT_EQ(test::max_abs_diff(hi, h), 0.0) << what << ": forward vs forward_train";
  }

  // Backward with dL/dout = R.
  std::vector<float> dh(R.begin(), R.end());
  nn::Scratch s;
  b.backward(acts, T, rope, c.seg, dh.data(), s);
  g["input"] = dh;

  // Every entry of every tensor with an analytic gradient: max |analytic - central difference| relative to
  // the tensor's largest |central difference|. With rotary q and k no tensor has a structurally zero gradient
  // (the k part of the qkv bias is rotated differently for every token, so softmax no longer ignores it).
  auto loss = [&] {
    const std::vector<double> o = ref_out();
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += o[i] * R[i];
    return l;
  };
  for (const auto& [name, an] : g) {
    std::vector<double>& v = w.at(name);
    EXPECT_EQ(v.size(), an.size()) << name;
    double max_err = 0, max_fd = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const double fd = test::central_difference(v, i, 1e-6, loss);
      max_err = std::max(max_err, std::fabs(fd - double(an[i])));
      max_fd = std::max(max_fd, std::fabs(fd));
    }
    EXPECT_GT(max_fd, 1e-3) << what << ": " << name << " has a (near) zero gradient";
    const double rel = max_err / std::max(max_fd, 1e-300);
    res.worst = std::max(res.worst, rel);
    EXPECT_LE(rel, 2e-5) << what << ": " << name << " max |analytic - fd| = " << max_err
                         << ", max |fd| = " << max_fd;
  }
  res.tensors = int(g.size());
  std::cout << "[rope block fd] " << what << ": forward max |float - double| = " << res.fwd << "; "
            << res.tensors << " tensors (input included), worst max|err|/max|fd| = " << res.worst << "\n";
  return res;
}

}  // namespace
}  // namespace rope_block_test

using rope_block_test::rb_run;
using rope_block_test::RbCase;
using rope_block_test::RbLora;

TEST(RopeViTBlockGrad, Qwen2VlLayerNormQuickGeluThreeSegments) {
  RbCase c;  // D 12, 2 heads, T 13 in segments of 4, 7 and 2
  rb_run(c, "2-VL, 3 segments");
}

TEST(RopeViTBlockGrad, Qwen2VlLayerNormQuickGeluTwoSegments) {
  RbCase c;
  c.D = 8;
  c.I = 16;
  c.T = 10;
  c.seg = {0, 7, 10};
  c.seed = 2;
  rb_run(c, "2-VL, D 8, 2 segments");
}

TEST(RopeViTBlockGrad, Qwen25VlRmsNormGatedSiluThreeSegments) {
  RbCase c;
  c.v25 = true;
  c.T = 14;
  c.seg = {0, 3, 8, 14};
  c.seed = 3;
  rb_run(c, "2.5-VL, 3 segments");
}

TEST(RopeViTBlockGrad, Qwen25VlRmsNormGatedSiluTwoSegments) {
  RbCase c;
  c.v25 = true;
  c.D = 8;
  c.I = 12;
  c.T = 11;
  c.seg = {0, 2, 11};
  c.seed = 4;
  rb_run(c, "2.5-VL, D 8, 2 segments");
}

TEST(RopeViTBlockGrad, OneSegmentIsFullAttention) {
  RbCase c;
  c.T = 9;
  c.seg = {0, 9};
  c.seed = 5;
  rb_run(c, "2-VL, 1 segment");
}

TEST(RopeViTBlockGrad, LoraOnQkvRestTrained) {
  RbLora l;
  l.modules = {"attn.qkv"};
  RbCase c;
  c.lora = &l;
  c.seed = 6;
  rb_run(c, "2-VL, LoRA qkv (base frozen), rest trained");
}

TEST(RopeViTBlockGrad, LoraDropoutOnQkvAndDownFrozenBase) {
  RbLora l;
  l.modules = {"attn.qkv", "mlp.down_proj"};
  l.rank = 3;
  l.dropout = 0.25f;
  RbCase c;
  c.v25 = true;
  c.lora = &l;
  c.train_params = false;  // only the adapters train; the input gradient flows through the frozen base
  c.seed = 7;
  rb_run(c, "2.5-VL, LoRA+dropout qkv and down_proj, frozen base");
}

TEST(RopeViTBlockGrad, FrozenBlockPassesInputGradient) {
  for (bool v25 : {false, true}) {
    RbCase c;
    c.v25 = v25;
    c.train_params = false;  // nothing trains: only the input gradient
    c.seed = 8;
    rb_run(c, v25 ? "2.5-VL frozen" : "2-VL frozen");
  }
}
