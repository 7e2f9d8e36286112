// CLIP vision tower: forward, training forward/backward, parameter slots.
#include "models/vit_clip.h"

#include <cmath>

#include "ops/elementwise.h"
#include "ops/patch.h"

namespace iris::models {

Tensor sincos_positions_2d(const ClipVisionConfig& cfg, float scale) {
  const int64_t D = cfg.hidden_size, g = cfg.grid(), q = D / 4;
  IRIS_CHECK(D % 4 == 0, "2-D sine-cosine positions need a hidden size divisible by 4, got ", D);
  Tensor t = Tensor::zeros({cfg.num_positions(), D});
  float* d = t.data<float>();
  for (int64_t r = 0; r < g; ++r)
    for (int64_t c = 0; c < g; ++c) {
      float* row = d + (1 + r * g + c) * D;  // row 0 is the class token's
      for (int64_t i = 0; i < q; ++i) {
        const double omega = std::pow(10000.0, -double(i) / double(q));
        row[i] = float(scale * std::sin(double(r) * omega));
        row[q + i] = float(scale * std::cos(double(r) * omega));
        row[2 * q + i] = float(scale * std::sin(double(c) * omega));
        row[3 * q + i] = float(scale * std::cos(double(c) * omega));
      }
    }
  return t;
}

void ClipVision::load(WeightLoader& w, const std::string& prefix, const ClipVisionConfig& cfg, int n_layers,
                      bool with_post_layernorm, int used_layers) {
  cfg_ = cfg;
  prefix_ = prefix;
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, C = cfg.num_channels, p = cfg.patch_size;
  if (n_layers < 0) n_layers = cfg.num_hidden_layers;
  if (used_layers < 0) used_layers = n_layers;
  IRIS_CHECK(n_layers <= cfg.num_hidden_layers, "vision tower has ", cfg.num_hidden_layers, " layers, asked for ",
             n_layers);
  const std::string e = prefix + "embeddings.";
  Tensor pw = w.raw(e + "patch_embedding.weight", {D, C, p, p});  // (D, C, p, p)
  patch_.w = cpu::LinearWeight(pw.view({D, C * p * p}), w.precision());
  class_emb_ = w.f32(e + "class_embedding", {D});
  pos_emb_ = w.f32(e + "position_embedding.weight", {cfg.num_positions(), D});
  w.record([this, e, D, C, p](std::vector<nn::ParamSlot>& out) {
    out.push_back(nn::tensor_slot(e + "class_embedding", class_emb_, grad_class_emb_, true));
    // The convolution weight is (D, C, p, p) in the checkpoint and (D, C*p*p) in the layer.
    nn::Linear* pl = &patch_;
    out.push_back({e + "patch_embedding.weight", patch_.w.tensor().view({D, C, p, p}), true,
                   [pl, D](const Tensor& master, float* grad, cpu::MatmulPrecision precision) {
                     pl->w = cpu::LinearWeight(master.view({D, -1}), precision);
                     pl->grad_w = grad;
                   },
                   [pl] {
                     if (pl->w.precision() == cpu::MatmulPrecision::BF16) pl->w.repack();
                   }});
    out.push_back(nn::tensor_slot(e + "position_embedding.weight", pos_emb_, grad_pos_emb_, true));
  });
  w.layernorm(pre_ln_, prefix + "pre_layrnorm", D, cfg.layer_norm_eps);
  ops::Activation act = ops::activation_from_name(cfg.hidden_act);
  const std::string component = w.component();
  layers_.clear();
  layers_.resize(size_t(n_layers));  // before loading: the record points into the layers
  for (int il = 0; il < n_layers; ++il) {
    // Layers past the ones the model uses are loaded and saved but neither train nor take adapters.
    if (il == used_layers) w.set_component("");
    load_vit_block(w, layers_[size_t(il)], prefix + "encoder.layers." + std::to_string(il) + ".", D, I,
                   cfg.layer_norm_eps, act, cfg.num_attention_heads);
  }
  w.set_component("");  // LLaVA never runs post_layernorm
  if (with_post_layernorm) w.layernorm(post_ln_, prefix + "post_layernorm", D, cfg.layer_norm_eps);
  else w.skip(prefix + "post_layernorm.");
  for (int il = n_layers; il < cfg.num_hidden_layers; ++il) w.skip(prefix + "encoder.layers." + std::to_string(il) + ".");
  w.set_component(component);
}

Tensor ClipVision::forward(const float* pixels, int64_t C, int64_t H, int64_t W, int n_layers, const nn::Tap& tap) const {
  IRIS_CHECK(C == cfg_.num_channels && H == cfg_.image_size && W == cfg_.image_size, "vision tower expects pixel values (",
             cfg_.num_channels, ", ", cfg_.image_size, ", ", cfg_.image_size, "), got (", C, ", ", H, ", ", W, ")");
  IRIS_CHECK(n_layers >= 0 && n_layers <= loaded_layers(), "vision tower: ", n_layers, " layers asked, ",
             loaded_layers(), " loaded");
  const int64_t D = cfg_.hidden_size, p = cfg_.patch_size, np = (H / p) * (W / p), T = np + 1;
  std::vector<float> cols(size_t(np * C * p * p));
  ops::patchify(pixels, C, H, W, p, cols.data());  // (np, C*p*p)
  Tensor h = Tensor::empty({T, D});
  float* hd = h.data<float>();
  patch_.forward(cols.data(), np, hd + D);  // rows 1..np
  const float* pos = pos_emb_.data<float>();
  const float* cls = class_emb_.data<float>();
  for (int64_t j = 0; j < D; ++j) hd[j] = cls[j] + pos[j];
  for (int64_t i = 1; i < T; ++i)
    for (int64_t j = 0; j < D; ++j) hd[i * D + j] += pos[i * D + j];
  pre_ln_.forward(hd, hd, T);
  if (tap) tap("embeddings", -1, hd, T, D);
  nn::Scratch s;
  for (int il = 0; il < n_layers; ++il) layers_[size_t(il)].forward(hd, T, s, tap, il);
  return h;
}

Tensor ClipVision::post_layernorm(const Tensor& x) const {
  IRIS_CHECK(post_ln_.w.defined(), "post_layernorm was not loaded");
  Tensor y = Tensor::empty(x.shape());
  post_ln_.forward(x.data<float>(), y.data<float>(), x.numel() / cfg_.hidden_size);
  return y;
}

void ClipVision::embed_train(const float* pixels, int64_t C, int64_t H, int64_t W, ClipVisionActs& a) const {
  IRIS_CHECK(C == cfg_.num_channels && H == cfg_.image_size && W == cfg_.image_size, "vision tower expects pixel values (",
             cfg_.num_channels, ", ", cfg_.image_size, ", ", cfg_.image_size, "), got (", C, ", ", H, ", ", W, ")");
  const int64_t D = cfg_.hidden_size, p = cfg_.patch_size, np = (H / p) * (W / p), T = np + 1;
  a.T = T;
  a.cols.resize(size_t(np * C * p * p));
  ops::patchify(pixels, C, H, W, p, a.cols.data());  // (np, C*p*p)
  a.emb.resize(size_t(T * D));
  float* e = a.emb.data();
  patch_.forward_train(a.cols.data(), np, e + D);  // rows 1..np
  const float* pos = pos_emb_.data<float>();
  const float* cls = class_emb_.data<float>();
  for (int64_t j = 0; j < D; ++j) e[j] = cls[j] + pos[j];
  for (int64_t i = 1; i < T; ++i)
    for (int64_t j = 0; j < D; ++j) e[i * D + j] += pos[i * D + j];
  a.pre_mean.resize(size_t(T));
  a.pre_rstd.resize(size_t(T));
  a.out.resize(size_t(T * D));
  pre_ln_.forward_train(e, a.out.data(), a.pre_mean.data(), a.pre_rstd.data(), T);
}

void ClipVision::forward_train(const float* pixels, int64_t C, int64_t H, int64_t W, int n_layers, ClipVisionActs& a,
                               bool checkpointing) const {
  IRIS_CHECK(n_layers >= 0 && n_layers <= loaded_layers(), "vision tower: ", n_layers, " layers asked, ",
             loaded_layers(), " loaded");
  embed_train(pixels, C, H, W, a);
  a.n_layers = n_layers;
  a.checkpointing = checkpointing;
  a.layers.resize(size_t(checkpointing ? std::min(n_layers, 1) : n_layers));
  a.inputs.resize(checkpointing ? size_t(n_layers) : 0);
  float* h = a.out.data();
  for (int il = 0; il < n_layers; ++il) {
    if (checkpointing) {
      a.inputs[size_t(il)].assign(h, h + a.out.size());
      layers_[size_t(il)].forward_train(h, a.T, a.layers[0]);
    } else {
      layers_[size_t(il)].forward_train(h, a.T, a.layers[size_t(il)]);
    }
  }
}

void ClipVision::backward(ClipVisionActs& a, float* dout) const {
  const int64_t D = cfg_.hidden_size, T = a.T, np = T - 1;
  nn::Scratch s;
  for (int il = a.n_layers - 1; il >= 0; --il) {
    const nn::ViTBlock& b = layers_[size_t(il)];
    if (a.checkpointing && il != a.n_layers - 1) {  // recompute (the last layer's activations are still there)
      std::vector<float> h = a.inputs[size_t(il)];
      b.forward_train(h.data(), T, a.layers[0]);
    }
    b.backward(a.layers[a.checkpointing ? 0 : size_t(il)], T, dout, s);
  }
  // pre_layrnorm, then emb = [class; patches] + positions.
  pre_ln_.backward(a.emb.data(), a.pre_mean.data(), a.pre_rstd.data(), dout, dout, T);
  if (grad_pos_emb_) ops::add_inplace(grad_pos_emb_, dout, T * D);
  if (grad_class_emb_) ops::add_inplace(grad_class_emb_, dout, D);
  if (patch_.trains()) patch_.backward(a.cols.data(), dout + D, np, nullptr);
}

bool ClipVision::trains(int n_layers) const {
  bool t = grad_class_emb_ || grad_pos_emb_ || patch_.trains() || pre_ln_.trains();
  for (int il = 0; il < n_layers && il < loaded_layers(); ++il) t = t || layers_[size_t(il)].trains();
  return t;
}

// ---- ClipEncoder -----------------------------------------------------------------------------------------

namespace {

struct ClipEncoderActs : PartActs {
  ClipVisionActs tower;
};

}  // namespace

void ClipEncoder::load(WeightLoader& w, const std::string& prefix, const LlavaConfig& c, bool full_tower) {
  feature_layer_ = c.feature_layer_index();
  drop_cls_ = c.vision_feature_select_strategy == "default";
  tower_.load(w, prefix, c.vision, full_tower ? -1 : feature_layer_, full_tower, feature_layer_);
}

void ClipEncoder::check_pixels(const ImagePixels& px) const {
  const ClipVisionConfig& v = tower_.config();
  IRIS_CHECK(px.values.defined() && px.values.ndim() == 3 && px.values.dtype() == DType::F32, "the CLIP tower takes "
             "float32 pixel values (C, H, W), got ", px.values.defined() ? shape_str(px.values.shape()) : "none");
  IRIS_CHECK(px.values.dim(0) == v.num_channels && px.values.dim(1) == v.image_size && px.values.dim(2) == v.image_size,
             "the CLIP tower takes pixel values (", v.num_channels, ", ", v.image_size, ", ", v.image_size, "), got ",
             shape_str(px.values.shape()));
}

Tensor ClipEncoder::forward(const ImagePixels& px, const nn::Tap& tap) const {
  check_pixels(px);
  Tensor x = px.values.contiguous();
  Tensor sel = tower_.forward(x.data<float>(), x.dim(0), x.dim(1), x.dim(2), feature_layer_, tap);
  if (tap) tap("vision_hidden", -1, sel.data<float>(), sel.dim(0), sel.dim(1));
  return drop_cls_ ? sel.slice(0, 1, sel.dim(0)).contiguous() : sel;
}

Tensor ClipEncoder::forward_train(const ImagePixels& px, std::unique_ptr<PartActs>& acts, bool checkpointing) const {
  check_pixels(px);
  Tensor x = px.values.contiguous();
  auto a = std::make_unique<ClipEncoderActs>();
  tower_.forward_train(x.data<float>(), x.dim(0), x.dim(1), x.dim(2), feature_layer_, a->tower, checkpointing);
  const int64_t T = a->tower.T, D = out_dim(), first = drop_cls_ ? 1 : 0;
  Tensor out = Tensor::empty({T - first, D});
  std::copy_n(a->tower.out.data() + first * D, (T - first) * D, out.data<float>());
  acts = std::move(a);
  return out;
}

void ClipEncoder::backward(PartActs& acts, float* dfeat) const {
  auto& a = static_cast<ClipEncoderActs&>(acts);
  const int64_t T = a.tower.T, D = out_dim(), first = drop_cls_ ? 1 : 0;
  std::vector<float> dsel(size_t(T * D), 0.0f);  // (T, D); the class token's row stays 0 when dropped
  std::copy_n(dfeat, (T - first) * D, dsel.data() + first * D);
  tower_.backward(a.tower, dsel.data());
}

}  // namespace iris::models
