// Gradient checks of the Qwen2-VL / Qwen2.5-VL vision tower and patch merger (models::Qwen2Vit +
// models::PatchMerger), created by models::WeightLoader with tiny configs, every weight then replaced by a
// random f32 master copy bound through the loader's slot record with a gradient buffer. The float training
// forward/backward of the pair, with loss <merger output, R>, against a double-precision reference of the
// whole tower + merger written here the way Hugging Face's Qwen2VisionTransformerPretrainedModel /
// Qwen2_5_VisionTransformerPretrainedModel run it: patch embedding, rot_pos_emb's (row, column) ids over
// merge blocks, get_window_index's padded windows (2.5), hidden states and rotary embeddings reordered by the
// window index, cu_seqlens per temporal slice and cu_window_seqlens (deduplicated), blocks
// (test::ref_rope_vit_block), the merger in window order and then the reverse index. Checked: the forward,
// the inference forwards bit for bit, central differences for the largest-|gradient| entry and 3 random
// entries of every tensor and for every entry of the merger's input gradient, gradient checkpointing bit for
// bit, and a partly frozen tower.
//
// Tolerances. Forward: <= 1e-5 of the output's scale (measured 3e-7 .. 5e-7). Gradients: |analytic - central
// difference| <= 2e-5 of the tensor's largest |gradient|, the bound tests/train/test_train_grad.cpp uses for
// the whole LLaVA loss (measured worst here 6e-7 .. 1.4e-6). Why that much room: the float gradients pass
// through 3 blocks, the window reordering and the merger (fan-in 64), so float rounding (~6e-8 per operation)
// compounds to ~1e-6 of a tensor's scale, and an entry is judged against its tensor's largest gradient; the
// central differences of the double reference (step 1e-6) are good to ~1e-9. A wrong index, sign, window or
// transposition gives errors of order 1 (ignoring the windows in the reference: 1.3 .. 1.6), so 2e-5 still
// separates the two by decades.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <numeric>
#include <random>

#include "models/patch_merger.h"
#include "models/qwen2_vit.h"
#include "nn/block_ref.h"
#include "test_util.h"

using namespace iris;

namespace qwen2_vit_grad_test {
namespace {

using test::Weights;

models::Qwen2VLVisionConfig qv_config(bool v25) {
  models::Qwen2VLVisionConfig c;
  c.v25 = v25;
  c.depth = 3;
  c.embed_dim = 16;  // 2 heads of 8: 2 row and 2 column rotary frequencies
  c.num_heads = 2;
  c.intermediate = 24;
  c.out_dim = 12;
  c.in_chans = 3;
  c.patch_size = 2;
  c.temporal_patch_size = 2;
  c.spatial_merge_size = 2;
  c.hidden_act = v25 ? "silu" : "quick_gelu";
  c.window_size = 8;  // 8 / 2 / 2 = 2 x 2 merged units: a 6 x 10-patch image (3 x 5 units) has 6 windows,
                      // 4 of them cut by the image's edge
  c.fullatt_block_indexes = {1};
  c.validate();
  return c;
}

// ---- the double reference ---------------------------------------------------------------------------------

// get_window_index for one image (Qwen2.5-VL), literally: unit ids padded with -100 to whole windows of ws x
// ws, read window by window; cu_window_seqlens in rows, consecutive duplicates (empty windows) removed as
// torch.unique_consecutive does. window_index[k] = the unit (m x m block of rows) at compute position k.
void qv_window_index(int64_t t, int64_t lh, int64_t lw, int64_t ws, int64_t unit,
                     std::vector<int64_t>& window_index, std::vector<int64_t>& cu) {
  const int64_t pad_h = ws - lh % ws, pad_w = ws - lw % ws;  // a whole extra window when already a multiple
  const int64_t nwh = (lh + pad_h) / ws, nww = (lw + pad_w) / ws;
  std::vector<int64_t> raw_cu = {0};
  for (int64_t ti = 0; ti < t; ++ti)
    for (int64_t wy = 0; wy < nwh; ++wy)
      for (int64_t wx = 0; wx < nww; ++wx) {
        int64_t count = 0;
        for (int64_t y = wy * ws; y < wy * ws + ws; ++y)
          for (int64_t x = wx * ws; x < wx * ws + ws; ++x) {
            const int64_t id = (y < lh && x < lw) ? ti * lh * lw + y * lw + x : -100;
            if (id == -100) continue;
            window_index.push_back(id);
            ++count;
          }
        raw_cu.push_back(raw_cu.back() + count * unit);
      }
  cu.clear();
  for (int64_t v : raw_cu)
    if (cu.empty() || cu.back() != v) cu.push_back(v);
}

// PatchMerger over rows (n * unit, D): ln_q per row (LayerNorm, or RMSNorm for 2.5; eps 1e-6), unit rows
// concatenated, mlp.2(gelu(mlp.0(x))). out (n, O).
std::vector<double> qv_ref_merger(const models::Qwen2VLVisionConfig& cfg, const Weights& w,
                                  const std::string& mp, const std::vector<double>& x) {
  const int64_t D = cfg.embed_dim, unit = int64_t(cfg.spatial_merge_size) * cfg.spatial_merge_size,
                H = D * unit, O = cfg.out_dim, rows = int64_t(x.size()) / D, n = rows / unit;
  std::vector<double> xn(x.size()), h(size_t(n * H)), out(size_t(n * O));
  if (cfg.v25)
    test::ref_rmsnorm(w, mp + "ln_q", x.data(), xn.data(), rows, D, 1e-6);
  else
    test::ref_layernorm(w, mp + "ln_q", x.data(), xn.data(), rows, D, 1e-6);
  test::ref_linear(w, mp + "mlp.0", xn.data(), n, H, H, h.data());
  for (double& v : h) v = ops::ref::gelu(v);
  test::ref_linear(w, mp + "mlp.2", h.data(), n, H, O, out.data());
  return out;
}

struct QvRef {
  std::vector<double> features;  // (N, D) tower output, pixel_values row order
  std::vector<double> out;       // (N / unit, O) merger output, pixel_values unit order
};

// The tower and merger for one image of grid (t, gh, gw): pixels (N, C*tp*p*p) in pixel_values order.
QvRef qv_ref_forward(const models::Qwen2VLVisionConfig& cfg, const Weights& w, const std::string& vp,
                     const std::vector<double>& pixels, int64_t t, int64_t gh, int64_t gw) {
  const int64_t D = cfg.embed_dim, P = cfg.patch_dim(), N = t * gh * gw, m = cfg.spatial_merge_size,
                unit = m * m, hd = cfg.head_dim(), dim = hd / 2, q = dim / 2, half = 2 * q;
  // Patch embedding: Conv3d with stride = kernel over each row = a product with the flattened kernel.
  std::vector<double> x(size_t(N * D));
  test::ref_linear(w, vp + "patch_embed.proj", pixels.data(), N, P, D, x.data());
  // rot_pos_emb: hpos / wpos = arange over the grid, reshaped (h/m, m, w/m, m), permuted (0, 2, 1, 3),
  // flattened, repeated t times; VisionRotaryEmbedding(dim): inv_freq = 1 / 10000^(arange(0, dim, 2) / dim);
  // each row's angles are [row * inv_freq, col * inv_freq].
  std::vector<double> inv(static_cast<size_t>(q)), ang(static_cast<size_t>(N * half));
  for (int64_t i = 0; i < q; ++i) inv[size_t(i)] = 1.0 / std::pow(10000.0, double(2 * i) / double(dim));
  for (int64_t ti = 0, r = 0; ti < t; ++ti)
    for (int64_t bh = 0; bh < gh / m; ++bh)
      for (int64_t bw = 0; bw < gw / m; ++bw)
        for (int64_t mh = 0; mh < m; ++mh)
          for (int64_t mw = 0; mw < m; ++mw, ++r)
            for (int64_t i = 0; i < q; ++i) {
              ang[size_t(r * half + i)] = double(bh * m + mh) * inv[size_t(i)];
              ang[size_t(r * half + q + i)] = double(bw * m + mw) * inv[size_t(i)];
            }
  // Window index (2.5; identity for 2-VL) and the segments.
  std::vector<int64_t> widx, cu_window, cu_full;
  if (cfg.v25) {
    qv_window_index(t, gh / m, gw / m, cfg.window_size / m / cfg.patch_size, unit, widx, cu_window);
  } else {
    widx.resize(size_t(N / unit));
    std::iota(widx.begin(), widx.end(), int64_t(0));
  }
  for (int64_t ti = 0; ti <= t; ++ti) cu_full.push_back(ti * gh * gw);
  EXPECT_EQ(int64_t(widx.size()), N / unit);
  // hidden_states.reshape(N / unit, unit, -1)[window_index]; the rotary embeddings likewise.
  std::vector<double> h(x.size()), cs(ang.size()), sn(ang.size());
  for (int64_t k = 0; k < N / unit; ++k)
    for (int64_t u = 0; u < unit; ++u) {
      const int64_t dst = k * unit + u, src = widx[size_t(k)] * unit + u;
      std::copy_n(x.data() + src * D, D, h.data() + dst * D);
      for (int64_t i = 0; i < half; ++i) {
        cs[size_t(dst * half + i)] = std::cos(ang[size_t(src * half + i)]);
        sn[size_t(dst * half + i)] = std::sin(ang[size_t(src * half + i)]);
      }
    }
  test::RefRopeVitShape shape;
  shape.D = D;
  shape.I = cfg.intermediate;
  shape.n_head = cfg.num_heads;
  shape.rms_norm = shape.gated = cfg.v25;
  shape.act = ops::activation_from_name(cfg.hidden_act);
  for (int il = 0; il < cfg.depth; ++il) {
    const auto& f = cfg.fullatt_block_indexes;
    const bool full = !cfg.v25 || std::find(f.begin(), f.end(), il) != f.end();
    test::ref_rope_vit_block(w, vp + "blocks." + std::to_string(il) + ".", shape, h, N, cs, sn,
                             full ? cu_full : cu_window);
  }
  // The merger in compute order, then hidden_states[argsort(window_index)].
  const std::vector<double> merged = qv_ref_merger(cfg, w, vp + "merger.", h);
  QvRef r;
  r.features.resize(h.size());
  r.out.resize(merged.size());
  const int64_t O = cfg.out_dim;
  for (int64_t k = 0; k < N / unit; ++k) {
    const int64_t src = widx[size_t(k)];
    std::copy_n(merged.data() + k * O, O, r.out.data() + src * O);
    std::copy_n(h.data() + k * unit * D, unit * D, r.features.data() + src * unit * D);
  }
  return r;
}

// ---- the float model --------------------------------------------------------------------------------------

struct QvCase {
  bool v25 = false;
  int64_t t = 1, gh = 6, gw = 10;
  uint64_t seed = 1;
  // Which tensors train (nullptr: all); the others are bound frozen (no gradient buffer).
  bool (*trains)(const std::string& name) = nullptr;
};

struct QvModel {
  models::Qwen2VLVisionConfig cfg;
  models::Qwen2Vit vit;
  models::PatchMerger merger;
  Weights w;                                        // by name, the values the float model holds (as doubles)
  std::map<std::string, Tensor> masters;            // the bound f32 master copies
  std::map<std::string, std::vector<float>> grads;  // gradient buffers of the tensors that train
};

// Created, then every tensor replaced by a random master: created weights are too regular (norms 1, biases
// 0).
void qv_build(QvModel& M, const QvCase& c) {
  M.cfg = qv_config(c.v25);
  models::WeightLoader wl(c.seed, 0.02f, cpu::MatmulPrecision::F32);
  M.vit.load(wl, "visual.", M.cfg);
  M.merger.load(wl, "visual.merger.", M.cfg);
  std::vector<nn::ParamSlot> slots = wl.take_record().param_slots("*");  // every weight the loader recorded
  std::mt19937_64 g(c.seed * 7919 + 3);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (nn::ParamSlot& s : slots) {
    ASSERT_FALSE(M.w.count(s.name)) << "two slots named " << s.name;
    ASSERT_TRUE(wl.has(s.name)) << s.name << " is a slot but was not created";
    const bool bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
    const bool norm = s.name.find("norm") != std::string::npos || s.name.find("ln_q") != std::string::npos;
    const int64_t n = s.value.numel();
    const double scale = bias ? 0.1 : norm ? 0.2 : 1.0 / std::sqrt(double(n / s.value.dim(0)));
    const double offset = norm && !bias ? 1.0 : 0.0;
    std::vector<double>& v = M.w[s.name];
    Tensor master = Tensor::empty(s.value.shape());
    for (int64_t i = 0; i < n; ++i) {
      master.data<float>()[i] = float(offset + scale * nd(g));
      v.push_back(double(master.data<float>()[i]));
    }
    float* grad = nullptr;
    if (!c.trains || c.trains(s.name)) {
      M.grads[s.name].assign(size_t(n), 0.0f);
      grad = M.grads[s.name].data();
    }
    s.bind(master, grad, cpu::MatmulPrecision::F32);
    M.masters[s.name] = master;
  }
}

struct QvRun {
  std::vector<float> features, out, dfeat;  // tower output, merger output, the merger's input gradient
};

// One training step's forward and backward with dL/dout = R; the gradient buffers are zeroed first.
QvRun qv_step(QvModel& M, const models::ImagePixels& px, const std::vector<float>& R, bool checkpointing) {
  for (auto& [name, g] : M.grads) std::fill(g.begin(), g.end(), 0.0f);
  QvRun r;
  std::unique_ptr<models::PartActs> va, ma;
  Tensor f = M.vit.forward_train(px, va, checkpointing);
  r.features.assign(f.data<float>(), f.data<float>() + f.numel());
  models::ImageFeatures o = M.merger.forward_train(f, px, ma);
  r.out.assign(o.embeddings.data<float>(), o.embeddings.data<float>() + o.embeddings.numel());
  EXPECT_EQ(r.out.size(), R.size());
  r.dfeat.assign(r.features.size(), 0.0f);
  M.merger.backward(*ma, R.data(), r.dfeat.data());
  std::vector<float> d = r.dfeat;  // the tower's backward destroys it
  M.vit.backward(*va, d.data());
  return r;
}

struct QvResult {
  double fwd = 0, worst = 0, worst_dfeat = 0;
  int checked = 0;
};

QvResult qv_run(const QvCase& c, const char* what) {
  QvResult res;
  QvModel M;
  qv_build(M, c);
  if (::testing::Test::HasFatalFailure()) return res;
  const models::Qwen2VLVisionConfig& cfg = M.cfg;
  const int64_t N = c.t * c.gh * c.gw, P = cfg.patch_dim(), unit = 4, O = cfg.out_dim;
  std::mt19937_64 g(c.seed + 100);
  std::normal_distribution<double> nd(0.0, 1.0);
  models::ImagePixels px;
  px.values = Tensor::empty({N, P});
  std::vector<double> pixels(size_t(N * P));
  for (int64_t i = 0; i < N * P; ++i) pixels[size_t(i)] = double(px.values.data<float>()[i] = float(nd(g)));
  px.grid_t = c.t;
  px.grid_h = c.gh;
  px.grid_w = c.gw;
  std::vector<float> R(size_t(N / unit * O));
  for (auto& v : R) v = float(nd(g));
  auto ref_loss = [&] {
    const QvRef r = qv_ref_forward(cfg, M.w, "visual.", pixels, c.t, c.gh, c.gw);
    double l = 0;
    for (size_t i = 0; i < r.out.size(); ++i) l += r.out[i] * double(R[i]);
    return l;
  };

  // Forward: float vs double; the inference forwards give the training forwards' values bit for bit.
  const QvRun run = qv_step(M, px, R, false);
  const QvRef ref = qv_ref_forward(cfg, M.w, "visual.", pixels, c.t, c.gh, c.gw);
  double scale = 1;
  for (double v : ref.out) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < ref.out.size(); ++i)
    res.fwd = std::max(res.fwd, std::fabs(double(run.out[i]) - ref.out[i]));
  res.fwd /= scale;
  EXPECT_LE(res.fwd, 1e-5) << what << ": merger output vs double reference (relative to max |out| " << scale
                           << ")";
  double fe = 0;
  for (size_t i = 0; i < ref.features.size(); ++i)
    fe = std::max(fe, std::fabs(double(run.features[i]) - ref.features[i]));
  EXPECT_LE(fe, 1e-5) << what << ": tower features vs double reference";
  const Tensor fi = M.vit.forward(px);
  EXPECT_EQ(test::max_abs_diff(fi.data<float>(), run.features.data(), run.features.size()), 0.0)
      << what << ": Qwen2Vit forward vs forward_train";
  const models::ImageFeatures oi = M.merger.forward(fi, px);
  EXPECT_EQ(oi.grid_t, c.t);
  EXPECT_EQ(oi.grid_h, c.gh / 2);
  EXPECT_EQ(oi.grid_w, c.gw / 2);
  EXPECT_EQ(test::max_abs_diff(oi.embeddings.data<float>(), run.out.data(), run.out.size()), 0.0)
      << what << ": PatchMerger forward vs forward_train";
  double loss = 0;
  for (size_t i = 0; i < R.size(); ++i) loss += double(run.out[i]) * double(R[i]);
  const double rl = ref_loss();
  EXPECT_NEAR(loss, rl, 1e-5 * std::max(1.0, std::fabs(rl))) << what << ": loss";

  // The merger's input gradient: every entry, central differences of the reference merger at the reference
  // features, relative to the largest.
  {
    std::vector<double> feats = ref.features;
    auto merger_loss = [&] {
      const std::vector<double> o = qv_ref_merger(cfg, M.w, "visual.merger.", feats);
      double l = 0;
      for (size_t i = 0; i < o.size(); ++i) l += o[i] * double(R[i]);
      return l;
    };
    double err = 0, mx = 0;
    for (size_t i = 0; i < feats.size(); ++i) {
      const double fd = test::central_difference(feats, i, 1e-6, merger_loss);
      err = std::max(err, std::fabs(fd - double(run.dfeat[i])));
      mx = std::max(mx, std::fabs(fd));
    }
    res.worst_dfeat = err / mx;
    EXPECT_LE(res.worst_dfeat, 2e-5) << what << ": merger input gradient, max |err| " << err << ", max |fd| "
                                     << mx;
  }

  // Parameters: the largest-|gradient| entry and 3 random ones of every tensor that trains.
  std::mt19937_64 pick(c.seed + 200);
  for (auto& [name, gr] : M.grads) {
    std::vector<double>& v = M.w.at(name);
    size_t imax = 0;
    for (size_t i = 0; i < gr.size(); ++i)
      if (std::fabs(gr[i]) > std::fabs(gr[imax])) imax = i;
    const double gmax = std::fabs(double(gr[imax]));
    std::vector<size_t> idx = {imax};
    for (int k = 0; k < 3; ++k) idx.push_back(size_t(pick() % gr.size()));
    double err = 0, fd_max = 0;
    for (size_t i : idx) {
      const double fd = test::central_difference(v, i, 1e-6, ref_loss);
      err = std::max(err, std::fabs(fd - double(gr[i])));
      fd_max = std::max(fd_max, std::fabs(fd));
    }
    res.checked += int(idx.size());
    EXPECT_GT(fd_max, 1e-4) << what << ": " << name << " has a (near) zero gradient";
    const double rel = err / std::max(gmax, 1e-300);
    res.worst = std::max(res.worst, rel);
    EXPECT_LE(rel, 2e-5) << what << ": " << name << " max |analytic - fd| " << err << ", max |grad| " << gmax;
  }
  // The bound masters hold exactly the reference's values, and only the tensors meant to train have buffers.
  for (const auto& [name, t] : M.masters) {
    double d = 0;
    for (int64_t i = 0; i < t.numel(); ++i)
      d = std::max(d, std::fabs(double(t.data<float>()[i]) - M.w.at(name)[size_t(i)]));
    EXPECT_EQ(d, 0.0) << name;
    EXPECT_EQ(M.grads.count(name) != 0, !c.trains || c.trains(name)) << name;
  }

  // Gradient checkpointing: the same gradients, bit for bit.
  std::map<std::string, std::vector<float>> first = M.grads;
  const QvRun again = qv_step(M, px, R, true);
  EXPECT_EQ(again.out, run.out) << what;
  EXPECT_EQ(again.dfeat, run.dfeat) << what;
  for (const auto& [name, gr] : M.grads) EXPECT_EQ(gr, first.at(name)) << what << ": checkpointing, " << name;

  std::cout << "[qwen2 vit fd] " << what << ": forward max|err|/max|out| = " << res.fwd << " (features " << fe
            << "); merger input gradient " << res.worst_dfeat << "; " << M.grads.size() << " tensors, "
            << res.checked << " entries, worst |err|/max|grad| = " << res.worst << "\n";
  return res;
}

bool qv_last_block_and_merger(const std::string& name) {
  return name.find("blocks.2.") != std::string::npos || name.find("merger.") != std::string::npos;
}

}  // namespace
}  // namespace qwen2_vit_grad_test

using qwen2_vit_grad_test::qv_run;
using qwen2_vit_grad_test::QvCase;

TEST(Qwen2VitGrad, Qwen2VlTowerAndMerger) {
  QvCase c;
  qv_run(c, "2-VL, 6x10 patches");
}

TEST(Qwen2VitGrad, Qwen25VlWindowsAndFullAttentionBlock) {
  QvCase c;
  c.v25 = true;
  c.seed = 2;
  qv_run(c, "2.5-VL, 6x10 patches, 6 windows, block 1 full");
}

TEST(Qwen2VitGrad, Qwen25VlTwoTemporalSlices) {
  QvCase c;
  c.v25 = true;
  c.t = 2;
  c.gh = 4;
  c.gw = 6;  // 2 x 3 units: windows of 2 x 2 and 2 x 1, per slice
  c.seed = 3;
  qv_run(c, "2.5-VL, 2x4x6 patches");
}

TEST(Qwen2VitGrad, Qwen2VlTwoTemporalSlices) {
  QvCase c;
  c.t = 2;
  c.gh = 4;
  c.gw = 4;
  c.seed = 4;
  qv_run(c, "2-VL, 2x4x4 patches");
}

TEST(Qwen2VitGrad, OnlyLastBlockAndMergerTrain) {
  for (bool v25 : {false, true}) {
    QvCase c;
    c.v25 = v25;
    c.seed = 5;
    c.trains = qwen2_vit_grad_test::qv_last_block_and_merger;  // the tower's backward stops above block 1
    qv_run(c, v25 ? "2.5-VL, last block + merger" : "2-VL, last block + merger");
  }
}
