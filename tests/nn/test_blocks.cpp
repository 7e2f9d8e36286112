// Block-level gradient checks: the float training forward/backward of ViTBlock and DecoderBlock (all parameters,
// the input, LoRA adapters with dropout, frozen bases) against central differences of a double-precision
// reference of the same block (tests/nn/block_ref.h), over every entry of every tensor of small random blocks.
// The float forward is also checked against the reference, and forward_train against the inference forward.
#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <random>

#include "nn/block_ref.h"
#include "nn/blocks.h"
#include "nn/kv_cache.h"
#include "test_util.h"

using namespace iris;
using test::Weights;

namespace {

// Gradient buffers by weight name (std::map: the vectors never move once created).
using Grads = std::map<std::string, std::vector<float>>;

struct Rng {
  std::mt19937_64 g{12345};
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(g); }
};

// A random tensor rounded to float (the float block sees exactly these values).
void fill(Weights& w, const std::string& name, int64_t n, double scale, double offset, Rng& rng) {
  std::vector<double>& v = w[name];
  v.resize(size_t(n));
  for (auto& x : v) x = double(float(offset + scale * rng.normal()));
}

Tensor tensor_of(const std::vector<double>& v, const Shape& s) {
  Tensor t = Tensor::empty(s);
  for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = float(v[i]);
  return t;
}

float* grad_for(Grads& g, const std::string& name, size_t n) {
  g[name].assign(n, 0.0f);
  return g[name].data();
}

struct LoraCfg {
  std::vector<std::string> modules;  // short names that get an adapter
  int rank = 3;
  double scale = 1.5;
  float dropout = 0.0f;
  bool freeze_base = true;  // adapted linears' own weights frozen (PEFT)
};

const char* kPeft = "base_model.model.";

bool adapted(const LoraCfg* l, const std::string& module) {
  if (!l) return false;
  for (const auto& m : l->modules)
    if (module.size() >= m.size() && module.compare(module.size() - m.size(), m.size(), m) == 0) return true;
  return false;
}

// Random weights of a linear (and its adapter) into w.
void make_linear_weights(Weights& w, const std::string& module, int64_t out, int64_t in, bool bias, Rng& rng,
                         const LoraCfg* lora) {
  fill(w, module + ".weight", out * in, 1.0 / std::sqrt(double(in)), 0.0, rng);
  if (bias) fill(w, module + ".bias", out, 0.1, 0.0, rng);
  if (adapted(lora, module)) {
    fill(w, kPeft + module + ".lora_A.weight", lora->rank * in, 1.0 / std::sqrt(double(in)), 0.0, rng);
    // B is random (not PEFT's zeros) so that A's gradient is not identically zero.
    fill(w, kPeft + module + ".lora_B.weight", out * lora->rank, 0.3, 0.0, rng);
  }
}

// The float layer over the same values, with gradient buffers for what trains.
nn::Linear make_linear(const Weights& w, const std::string& module, int64_t out, int64_t in, Grads* g,
                       const LoraCfg* lora, uint64_t seed) {
  nn::Linear l;
  l.w = cpu::LinearWeight(tensor_of(test::at(w, module + ".weight"), {out, in}), cpu::MatmulPrecision::F32);
  const bool has_bias = w.count(module + ".bias") != 0;
  if (has_bias) l.b = tensor_of(test::at(w, module + ".bias"), {out});
  const bool ad = adapted(lora, module);
  if (g && !(ad && lora->freeze_base)) {
    l.grad_w = grad_for(*g, module + ".weight", size_t(out * in));
    if (has_bias) l.grad_b = grad_for(*g, module + ".bias", size_t(out));
  }
  if (ad) {
    l.lora = std::make_unique<nn::LoraAdapter>();
    l.lora->A = tensor_of(test::at(w, kPeft + module + ".lora_A.weight"), {lora->rank, in});
    l.lora->B = tensor_of(test::at(w, kPeft + module + ".lora_B.weight"), {out, lora->rank});
    l.lora->scale = float(lora->scale);
    l.lora->dropout = lora->dropout;
    l.lora->dropout_seed = seed;
    if (g) {
      l.lora->grad_A = grad_for(*g, kPeft + module + ".lora_A.weight", size_t(lora->rank * in));
      l.lora->grad_B = grad_for(*g, kPeft + module + ".lora_B.weight", size_t(out * lora->rank));
    }
  }
  return l;
}

template <typename Norm>
void make_norm(Norm& n, const Weights& w, const std::string& module, int64_t dim, Grads* g) {
  n.w = tensor_of(test::at(w, module + ".weight"), {dim});
  if (g) n.grad_w = grad_for(*g, module + ".weight", size_t(dim));
  if constexpr (std::is_same_v<Norm, nn::LayerNorm>) {
    n.b = tensor_of(test::at(w, module + ".bias"), {dim});
    if (g) n.grad_b = grad_for(*g, module + ".bias", size_t(dim));
  }
}

// For every entry of every tensor with an analytic gradient: the largest |analytic - central difference| relative
// to the tensor's largest |central difference|. A tensor whose true gradient is identically zero (a CLIP key bias:
// softmax ignores a constant added to every score of a row) is held to |analytic| <= 1e-5 of the block's largest
// gradient instead. Returns the worst relative error, printing it.
double check_all(Weights& w, const Grads& analytic, const std::function<double()>& loss, const char* what) {
  struct Row {
    std::string name;
    double max_err = 0, max_fd = 0, max_an = 0;
  };
  std::vector<Row> rows;
  double global_fd = 0;
  for (const auto& [name, g] : analytic) {
    std::vector<double>& v = w.at(name);
    EXPECT_EQ(v.size(), g.size()) << name;
    Row r{name};
    for (size_t i = 0; i < v.size(); ++i) {
      const double fd = test::central_difference(v, i, 1e-6, loss);
      r.max_err = std::max(r.max_err, std::fabs(fd - double(g[i])));
      r.max_fd = std::max(r.max_fd, std::fabs(fd));
      r.max_an = std::max(r.max_an, std::fabs(double(g[i])));
    }
    global_fd = std::max(global_fd, r.max_fd);
    rows.push_back(r);
  }
  double worst = 0;
  int zero = 0;
  for (const Row& r : rows) {
    if (r.max_fd <= 1e-6 * global_fd) {  // structurally zero
      ++zero;
      EXPECT_LE(r.max_an, 1e-5 * global_fd) << what << ": " << r.name << " should have a zero gradient";
      continue;
    }
    const double rel = r.max_err / r.max_fd;
    worst = std::max(worst, rel);
    EXPECT_LE(rel, 2e-5) << what << ": " << r.name << " max |analytic - fd| = " << r.max_err << ", max |fd| = "
                         << r.max_fd;
  }
  EXPECT_LE(zero, 1) << what << ": more tensors with a zero gradient than the CLIP key bias";
  std::cout << "[block fd] " << what << ": " << analytic.size() << " tensors, worst max|err|/max|fd| = " << worst
            << (zero ? " (1 structurally zero)" : "") << "\n";
  return worst;
}

std::vector<double> random_vec(size_t n, Rng& rng) {
  std::vector<double> r(n);
  for (auto& x : r) x = double(float(rng.normal()));
  return r;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---- ViT block ---------------------------------------------------------------------------------------------

struct VitCase {
  int64_t D = 16, I = 24, H = 4, T = 7;
  ops::Activation act = ops::Activation::QuickGelu;
  const LoraCfg* lora = nullptr;
  bool train_params = true;
};

void run_vit(const VitCase& c, const char* what) {
  Rng rng;
  Weights w;
  const std::string p = "vision_model.encoder.layers.0.";
  for (const char* n : {"layer_norm1", "layer_norm2"}) {
    fill(w, p + n + ".weight", c.D, 0.2, 1.0, rng);
    fill(w, p + n + ".bias", c.D, 0.1, 0.0, rng);
  }
  for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"})
    make_linear_weights(w, p + n, c.D, c.D, true, rng, c.lora);
  make_linear_weights(w, p + "mlp.fc1", c.I, c.D, true, rng, c.lora);
  make_linear_weights(w, p + "mlp.fc2", c.D, c.I, true, rng, c.lora);
  fill(w, "input", c.T * c.D, 1.0, 0.0, rng);
  const std::vector<double> R = random_vec(size_t(c.T * c.D), rng);  // L = sum(out * R)

  Grads g;
  Grads* gp = c.train_params || c.lora ? &g : nullptr;
  nn::ViTBlock b;
  make_norm(b.ln1, w, p + "layer_norm1", c.D, c.train_params ? gp : nullptr);
  make_norm(b.ln2, w, p + "layer_norm2", c.D, c.train_params ? gp : nullptr);
  auto lin = [&](const std::string& n, int64_t out, int64_t in, uint64_t seed) {
    return make_linear(w, p + n, out, in, c.train_params ? gp : (adapted(c.lora, p + n) ? gp : nullptr), c.lora, seed);
  };
  b.q = lin("self_attn.q_proj", c.D, c.D, 11);
  b.k = lin("self_attn.k_proj", c.D, c.D, 12);
  b.v = lin("self_attn.v_proj", c.D, c.D, 13);
  b.o = lin("self_attn.out_proj", c.D, c.D, 14);
  b.fc1 = lin("mlp.fc1", c.I, c.D, 15);
  b.fc2 = lin("mlp.fc2", c.D, c.I, 16);
  b.act = c.act;
  b.n_head = int(c.H);

  test::RefLoraOpts lo;
  if (c.lora) {
    lo.scale = c.lora->scale;
    lo.dropout = c.lora->dropout;
    const char* mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                          "mlp.fc1", "mlp.fc2"};
    for (int i = 0; i < 6; ++i) lo.seeds[p + mods[i]] = uint64_t(11 + i);
  }
  test::RefVitShape shape{c.D, c.I, c.H, 1e-5, c.act};
  auto ref_out = [&] {
    std::vector<double> h = w.at("input");
    test::ref_vit_block(w, p, shape, h, c.T, c.lora ? &lo : nullptr);
    return h;
  };

  // Forward: float vs double.
  std::vector<float> h(size_t(c.T * c.D));
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(w.at("input")[i]);
  nn::ViTBlockActs acts;
  b.forward_train(h.data(), c.T, acts);
  std::vector<double> ref = ref_out();
  double fwd = 0;
  for (size_t i = 0; i < h.size(); ++i) fwd = std::max(fwd, std::fabs(double(h[i]) - ref[i]));
  EXPECT_LE(fwd, 1e-5) << what << ": forward_train vs double reference";
  if (!c.lora || c.lora->dropout == 0) {  // the inference forward computes the same function
    std::vector<float> hi(size_t(c.T * c.D));
    for (size_t i = 0; i < hi.size(); ++i) hi[i] = float(w.at("input")[i]);
    nn::Scratch s;
    b.forward(hi.data(), c.T, s);
    EXPECT_EQ(test::max_abs_diff(hi.data(), h.data(), hi.size()), 0.0) << what << ": forward_train vs forward";
  }

  // Backward with dL/dout = R.
  std::vector<float> dh(R.begin(), R.end());
  nn::Scratch s;
  b.backward(acts, c.T, dh.data(), s);
  g["input"] = dh;
  check_all(w, g, [&] { return dot(ref_out(), R); }, what);
}

// ---- decoder block -----------------------------------------------------------------------------------------

struct DecCase {
  int64_t D = 16, I = 20, H = 4, KV = 2, hd = 6, T = 9;
  bool attn_bias = false, mlp_bias = false;
  const LoraCfg* lora = nullptr;
  bool train_params = true;
};

void run_decoder(const DecCase& c, const char* what) {
  Rng rng;
  Weights w;
  const std::string p = "model.layers.0.";
  const int64_t qd = c.H * c.hd, kvd = c.KV * c.hd;
  fill(w, p + "input_layernorm.weight", c.D, 0.2, 1.0, rng);
  fill(w, p + "post_attention_layernorm.weight", c.D, 0.2, 1.0, rng);
  make_linear_weights(w, p + "self_attn.q_proj", qd, c.D, c.attn_bias, rng, c.lora);
  make_linear_weights(w, p + "self_attn.k_proj", kvd, c.D, c.attn_bias, rng, c.lora);
  make_linear_weights(w, p + "self_attn.v_proj", kvd, c.D, c.attn_bias, rng, c.lora);
  make_linear_weights(w, p + "self_attn.o_proj", c.D, qd, c.attn_bias, rng, c.lora);
  make_linear_weights(w, p + "mlp.gate_proj", c.I, c.D, c.mlp_bias, rng, c.lora);
  make_linear_weights(w, p + "mlp.up_proj", c.I, c.D, c.mlp_bias, rng, c.lora);
  make_linear_weights(w, p + "mlp.down_proj", c.D, c.I, c.mlp_bias, rng, c.lora);
  fill(w, "input", c.T * c.D, 1.0, 0.0, rng);
  const std::vector<double> R = random_vec(size_t(c.T * c.D), rng);

  Grads g;
  Grads* gp = c.train_params || c.lora ? &g : nullptr;
  nn::DecoderBlock b;
  make_norm(b.attn_norm, w, p + "input_layernorm", c.D, c.train_params ? gp : nullptr);
  make_norm(b.mlp_norm, w, p + "post_attention_layernorm", c.D, c.train_params ? gp : nullptr);
  b.attn_norm.eps = b.mlp_norm.eps = 1e-6f;
  auto lin = [&](const std::string& n, int64_t out, int64_t in, uint64_t seed) {
    return make_linear(w, p + n, out, in, c.train_params ? gp : (adapted(c.lora, p + n) ? gp : nullptr), c.lora, seed);
  };
  b.q = lin("self_attn.q_proj", qd, c.D, 21);
  b.k = lin("self_attn.k_proj", kvd, c.D, 22);
  b.v = lin("self_attn.v_proj", kvd, c.D, 23);
  b.o = lin("self_attn.o_proj", c.D, qd, 24);
  b.gate = lin("mlp.gate_proj", c.I, c.D, 25);
  b.up = lin("mlp.up_proj", c.I, c.D, 26);
  b.down = lin("mlp.down_proj", c.D, c.I, 27);
  b.n_head = int(c.H);
  b.n_kv_head = int(c.KV);
  b.head_dim = int(c.hd);
  std::vector<float> inv_freq(size_t(c.hd / 2));
  ops::rope_default_inv_freq(10000.0f, c.hd, inv_freq.data());
  std::vector<int64_t> pos(size_t(c.T));
  for (int64_t t = 0; t < c.T; ++t) pos[size_t(t)] = t;
  const ops::RopeTable rope = ops::rope_table(pos.data(), c.T, 1, nullptr, inv_freq.data(), c.hd / 2);

  test::RefLoraOpts lo;
  if (c.lora) {
    lo.scale = c.lora->scale;
    lo.dropout = c.lora->dropout;
    const char* mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    for (int i = 0; i < 7; ++i) lo.seeds[p + mods[i]] = uint64_t(21 + i);
  }
  test::RefDecoderShape shape{c.D, c.I, c.H, c.KV, c.hd, 1e-6, inv_freq};
  auto ref_out = [&] {
    std::vector<double> h = w.at("input");
    test::ref_decoder_block(w, p, shape, h, c.T, c.lora ? &lo : nullptr);
    return h;
  };

  std::vector<float> h(size_t(c.T * c.D));
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(w.at("input")[i]);
  std::vector<float> x0 = h;
  nn::DecoderBlockActs acts;
  b.forward_train(h.data(), c.T, rope, acts);
  std::vector<double> ref = ref_out();
  double fwd = 0;
  for (size_t i = 0; i < h.size(); ++i) fwd = std::max(fwd, std::fabs(double(h[i]) - ref[i]));
  EXPECT_LE(fwd, 1e-5) << what << ": forward_train vs double reference";

  if (!c.lora || c.lora->dropout == 0) {  // the inference forward (KV cache) computes the same function
    nn::KVCache cache(1, c.T, kvd);
    nn::Scratch s;
    std::vector<float> hi = x0;
    b.forward(hi.data(), c.T, rope, 0, cache, 0, s);
    EXPECT_EQ(test::max_abs_diff(hi.data(), h.data(), hi.size()), 0.0) << what << ": forward_train vs forward";
  }

  std::vector<float> dh(R.begin(), R.end());
  nn::Scratch s;
  b.backward(acts, c.T, rope, dh.data(), s);
  g["input"] = dh;
  check_all(w, g, [&] { return dot(ref_out(), R); }, what);
}

}  // namespace

TEST(BlockGradients, VitBlockQuickGelu) { run_vit({}, "vit quick_gelu"); }

TEST(BlockGradients, VitBlockGeluWideMlp) {
  VitCase c;
  c.act = ops::Activation::Gelu;
  c.I = 40;
  c.T = 5;
  c.H = 2;
  run_vit(c, "vit gelu");
}

TEST(BlockGradients, VitBlockLoraDropoutFrozenBase) {
  LoraCfg l;
  l.modules = {"q_proj", "v_proj", "out_proj", "fc1"};
  l.dropout = 0.25f;
  VitCase c;
  c.lora = &l;
  c.train_params = false;  // only the adapters train; the input gradient flows through the frozen base
  run_vit(c, "vit lora+dropout, frozen base");
}

TEST(BlockGradients, DecoderBlockGqa) { run_decoder({}, "decoder gqa"); }

TEST(BlockGradients, DecoderBlockMhaBiases) {
  DecCase c;
  c.H = c.KV = 3;
  c.hd = 8;
  c.attn_bias = c.mlp_bias = true;
  run_decoder(c, "decoder mha biases");
}

TEST(BlockGradients, DecoderBlockLoraDropout) {
  LoraCfg l;
  l.modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  l.dropout = 0.3f;
  l.rank = 2;
  DecCase c;
  c.lora = &l;
  c.attn_bias = true;
  run_decoder(c, "decoder lora+dropout, norms trained");  // the adapted linears' weights and biases frozen
}

TEST(BlockGradients, DecoderBlockLoraNoDropoutMqa) {
  LoraCfg l;
  l.modules = {"q_proj", "v_proj", "down_proj"};
  DecCase c;
  c.KV = 1;
  c.lora = &l;
  run_decoder(c, "decoder lora mqa, rest trained");
}

TEST(BlockGradients, FrozenDecoderBlockPassesInputGradient) {
  DecCase c;
  c.train_params = false;  // nothing trains: only the input gradient
  run_decoder(c, "decoder frozen");
}

TEST(BlockGradients, FrozenVitBlockPassesInputGradient) {
  VitCase c;
  c.train_params = false;
  run_vit(c, "vit frozen");
}
