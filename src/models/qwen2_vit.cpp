// Qwen2-VL / Qwen2.5-VL vision tower: layout (rotary angles, windows), forward, training pair, slots.
#include "models/qwen2_vit.h"

#include <algorithm>
#include <cmath>

namespace iris::models {

namespace {

struct Qwen2VitActs : PartActs {
  Qwen2VitLayout layout;
  int64_t N = 0;
  bool checkpointing = false;
  std::vector<float> cols;                      // (N, patch_dim) pixel rows in compute order
  std::vector<nn::RopeViTBlockActs> blocks;     // one per block, or one reused when checkpointing
  std::vector<std::vector<float>> inputs;       // checkpointing: each block's input (N, D)
  std::vector<float> out;                       // (N, D) compute order
};

// rows (N, D) in compute order -> pixel_values order (order[r] is the source row of compute row r), or back.
void unpermute(const float* in, float* out, const std::vector<int64_t>& order, int64_t D) {
  for (size_t r = 0; r < order.size(); ++r) std::copy_n(in + int64_t(r) * D, D, out + order[r] * D);
}
void permute(const float* in, float* out, const std::vector<int64_t>& order, int64_t D) {
  for (size_t r = 0; r < order.size(); ++r) std::copy_n(in + order[r] * D, D, out + int64_t(r) * D);
}

}  // namespace

void Qwen2Vit::load(WeightLoader& w, const std::string& prefix, const Qwen2VLVisionConfig& cfg) {
  cfg_ = cfg;
  prefix_ = prefix;
  const int64_t D = cfg.embed_dim, I = cfg.intermediate, C = cfg.in_chans, p = cfg.patch_size,
                tp = cfg.temporal_patch_size;
  Tensor pw = w.raw(prefix + "patch_embed.proj.weight", {D, C, tp, p, p});
  patch_.w = cpu::LinearWeight(pw.view({D, C * tp * p * p}), w.precision());
  w.record([this, D, C, tp, p](std::vector<nn::ParamSlot>& out) {
    // The Conv3d weight is (D, C, tp, p, p) in the checkpoint and (D, C*tp*p*p) in the layer.
    nn::Linear* pl = &patch_;
    out.push_back({prefix_ + "patch_embed.proj.weight", patch_.w.tensor().view({D, C, tp, p, p}), true,
                   [pl, D](const Tensor& master, float* grad, cpu::MatmulPrecision precision) {
                     pl->w = cpu::LinearWeight(master.view({D, -1}), precision);
                     pl->grad_w = grad;
                   },
                   [pl] {
                     if (pl->w.precision() == cpu::MatmulPrecision::BF16) pl->w.repack();
                   }});
  });
  const ops::Activation act = ops::activation_from_name(cfg.hidden_act);
  IRIS_CHECK(!cfg.v25 || act == ops::Activation::Silu, "Qwen2.5-VL vision hidden_act '", cfg.hidden_act,
             "' is not supported (its gated MLP: silu)");
  blocks_.clear();
  blocks_.resize(size_t(cfg.depth));
  for (int il = 0; il < cfg.depth; ++il) {
    const std::string l = prefix + "blocks." + std::to_string(il) + ".";
    nn::RopeViTBlock& b = blocks_[size_t(il)];
    b.rms_norm = cfg.v25;
    b.gated = cfg.v25;
    if (cfg.v25) {
      w.rmsnorm(b.rn1, l + "norm1", D, 1e-6f);
      w.rmsnorm(b.rn2, l + "norm2", D, 1e-6f);
    } else {
      w.layernorm(b.ln1, l + "norm1", D, 1e-6f);
      w.layernorm(b.ln2, l + "norm2", D, 1e-6f);
    }
    w.linear(b.qkv, l + "attn.qkv", 3 * D, D, true);
    w.linear(b.proj, l + "attn.proj", D, D, true);
    if (cfg.v25) {
      w.linear(b.gate, l + "mlp.gate_proj", I, D, true);
      w.linear(b.up, l + "mlp.up_proj", I, D, true);
      w.linear(b.down, l + "mlp.down_proj", D, I, true);
    } else {
      w.linear(b.fc1, l + "mlp.fc1", I, D, true);
      w.linear(b.fc2, l + "mlp.fc2", D, I, true);
    }
    b.act = act;
    b.n_head = cfg.num_heads;
  }
  // VisionRotaryEmbedding(head_dim / 2): inv_freq = 1 / 10000^(arange(0, dim, 2) / dim), float32.
  const int64_t dim = cfg.head_dim() / 2;
  inv_freq_.resize(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) inv_freq_[size_t(i)] = 1.0f / std::pow(10000.0f, float(2 * i) / float(dim));
}

Qwen2VitLayout Qwen2Vit::layout(int64_t t, int64_t h, int64_t w) const {
  const int64_t m = cfg_.spatial_merge_size, unit = m * m, N = t * h * w, q = int64_t(inv_freq_.size());
  IRIS_CHECK(t >= 1 && h >= m && w >= m && h % m == 0 && w % m == 0, "image grid (", t, ", ", h, ", ", w,
             ") is not whole ", m, "x", m, " merge blocks");
  Qwen2VitLayout l;
  // Rotary angles of pixel_values row r: patches go over merge blocks in raster order, m x m inside each.
  std::vector<float> angles(size_t(N * 2 * q));
  int64_t r = 0;
  for (int64_t ti = 0; ti < t; ++ti)
    for (int64_t bh = 0; bh < h / m; ++bh)
      for (int64_t bw = 0; bw < w / m; ++bw)
        for (int64_t mh = 0; mh < m; ++mh)
          for (int64_t mw = 0; mw < m; ++mw, ++r) {
            const float row = float(bh * m + mh), col = float(bw * m + mw);
            for (int64_t i = 0; i < q; ++i) {
              angles[size_t(r * 2 * q + i)] = row * inv_freq_[size_t(i)];
              angles[size_t(r * 2 * q + q + i)] = col * inv_freq_[size_t(i)];
            }
          }
  for (int64_t ti = 0; ti <= t; ++ti) l.full.push_back(ti * h * w);
  l.order.resize(size_t(N));
  if (!cfg_.v25) {
    for (int64_t i = 0; i < N; ++i) l.order[size_t(i)] = i;
    l.rope = ops::rope_table_from_angles(angles.data(), N, 2 * q);
    return l;
  }
  // Qwen2.5-VL's get_window_index: merged units (lh x lw per slice) are grouped in windows of ws x ws units, in
  // raster order of windows and of units inside a window; windows cut by the image's edge are smaller.
  const int64_t lh = h / m, lw = w / m, ws = cfg_.window_size / m / cfg_.patch_size;
  const int64_t nwh = (lh + ws - 1) / ws, nww = (lw + ws - 1) / ws;
  int64_t next = 0;
  l.window.push_back(0);
  for (int64_t ti = 0; ti < t; ++ti)
    for (int64_t wy = 0; wy < nwh; ++wy)
      for (int64_t wx = 0; wx < nww; ++wx) {
        int64_t count = 0;
        for (int64_t y = wy * ws; y < std::min(lh, wy * ws + ws); ++y)
          for (int64_t x = wx * ws; x < std::min(lw, wx * ws + ws); ++x, ++count) {
            const int64_t u = ti * lh * lw + y * lw + x;
            for (int64_t k = 0; k < unit; ++k) l.order[size_t(next++)] = u * unit + k;
          }
        if (count > 0) l.window.push_back(l.window.back() + count * unit);
      }
  std::vector<float> permuted(angles.size());
  permute(angles.data(), permuted.data(), l.order, 2 * q);
  l.rope = ops::rope_table_from_angles(permuted.data(), N, 2 * q);
  return l;
}

const nn::Segments& Qwen2Vit::segments(const Qwen2VitLayout& l, int il) const {
  if (!cfg_.v25) return l.full;
  const auto& f = cfg_.fullatt_block_indexes;
  return std::find(f.begin(), f.end(), il) != f.end() ? l.full : l.window;
}

void Qwen2Vit::check_pixels(const ImagePixels& px) const {
  const int64_t N = px.grid_t * px.grid_h * px.grid_w;
  IRIS_CHECK(px.values.defined() && px.values.ndim() == 2 && px.values.dtype() == DType::F32,
             "the Qwen2-VL vision tower takes float32 pixel values (patches, ", cfg_.patch_dim(), "), got ",
             px.values.defined() ? shape_str(px.values.shape()) : "none");
  IRIS_CHECK(px.values.dim(1) == cfg_.patch_dim(), "pixel values have rows of ", px.values.dim(1), " values, expected ",
             cfg_.in_chans, " x ", cfg_.temporal_patch_size, " x ", cfg_.patch_size, " x ", cfg_.patch_size, " = ",
             cfg_.patch_dim());
  IRIS_CHECK(px.values.dim(0) == N, "image_grid_thw (", px.grid_t, ", ", px.grid_h, ", ", px.grid_w, ") makes ", N,
             " patches but pixel_values has ", px.values.dim(0), " rows");
}

Tensor Qwen2Vit::forward(const ImagePixels& px, const nn::Tap& tap) const {
  check_pixels(px);
  const Qwen2VitLayout l = layout(px.grid_t, px.grid_h, px.grid_w);
  const int64_t N = px.values.dim(0), D = cfg_.embed_dim, P = cfg_.patch_dim();
  Tensor x = px.values.contiguous();
  std::vector<float> cols(size_t(N * P));
  permute(x.data<float>(), cols.data(), l.order, P);
  std::vector<float> h(size_t(N * D));
  patch_.forward(cols.data(), N, h.data());
  if (tap) tap("patch_embed", -1, h.data(), N, D);
  nn::Scratch s;
  for (int il = 0; il < int(blocks_.size()); ++il)
    blocks_[size_t(il)].forward(h.data(), N, l.rope, segments(l, il), s, tap, il);
  Tensor out = Tensor::empty({N, D});
  unpermute(h.data(), out.data<float>(), l.order, D);
  if (tap) tap("vision_hidden", -1, out.data<float>(), N, D);
  return out;
}

Tensor Qwen2Vit::forward_train(const ImagePixels& px, std::unique_ptr<PartActs>& acts, bool checkpointing) const {
  check_pixels(px);
  auto a = std::make_unique<Qwen2VitActs>();
  a->layout = layout(px.grid_t, px.grid_h, px.grid_w);
  const int64_t N = px.values.dim(0), D = cfg_.embed_dim, P = cfg_.patch_dim(), L = int64_t(blocks_.size());
  a->N = N;
  a->checkpointing = checkpointing;
  Tensor x = px.values.contiguous();
  a->cols.resize(size_t(N * P));
  permute(x.data<float>(), a->cols.data(), a->layout.order, P);
  a->out.resize(size_t(N * D));
  float* h = a->out.data();
  patch_.forward_train(a->cols.data(), N, h);
  a->blocks.resize(size_t(checkpointing ? std::min<int64_t>(L, 1) : L));
  a->inputs.resize(checkpointing ? size_t(L) : 0);
  for (int il = 0; il < int(L); ++il) {
    if (checkpointing) a->inputs[size_t(il)].assign(h, h + N * D);
    blocks_[size_t(il)].forward_train(h, N, a->layout.rope, segments(a->layout, il),
                                      a->blocks[checkpointing ? 0 : size_t(il)]);
  }
  Tensor out = Tensor::empty({N, D});
  unpermute(h, out.data<float>(), a->layout.order, D);
  acts = std::move(a);
  return out;
}

void Qwen2Vit::backward(PartActs& acts, float* dfeat) const {
  auto& a = static_cast<Qwen2VitActs&>(acts);
  const int64_t N = a.N, D = cfg_.embed_dim, L = int64_t(blocks_.size());
  std::vector<float> dh(size_t(N * D));
  permute(dfeat, dh.data(), a.layout.order, D);  // into compute order
  nn::Scratch s;
  int lowest = 0;  // blocks below the lowest that trains need no backward unless the patch embedding trains
  if (!patch_.trains()) {
    lowest = int(L);
    for (int il = 0; il < int(L); ++il)
      if (blocks_[size_t(il)].trains()) {
        lowest = il;
        break;
      }
  }
  for (int il = int(L) - 1; il >= lowest; --il) {
    const nn::RopeViTBlock& b = blocks_[size_t(il)];
    if (a.checkpointing && il != L - 1) {  // recompute this block's activations (the last one's are still there)
      std::vector<float> h = a.inputs[size_t(il)];
      b.forward_train(h.data(), N, a.layout.rope, segments(a.layout, il), a.blocks[0]);
    }
    b.backward(a.blocks[a.checkpointing ? 0 : size_t(il)], N, a.layout.rope, segments(a.layout, il), dh.data(), s);
  }
  if (patch_.trains()) patch_.backward(a.cols.data(), dh.data(), N, nullptr);
}

bool Qwen2Vit::trains() const {
  bool t = patch_.trains();
  for (const auto& b : blocks_) t = t || b.trains();
  return t;
}

}  // namespace iris::models
