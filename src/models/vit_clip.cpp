// CLIP vision tower forward.
#include "models/vit_clip.h"

#include "ops/patch.h"

namespace iris::models {

void ClipVision::load(WeightLoader& w, const std::string& prefix, const ClipVisionConfig& cfg, int n_layers,
                      bool with_post_layernorm) {
  cfg_ = cfg;
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, C = cfg.num_channels, p = cfg.patch_size;
  if (n_layers < 0) n_layers = cfg.num_hidden_layers;
  IRIS_CHECK(n_layers <= cfg.num_hidden_layers, "vision tower has ", cfg.num_hidden_layers, " layers, asked for ",
             n_layers);
  const std::string e = prefix + "embeddings.";
  Tensor pw = w.raw(e + "patch_embedding.weight", {D, C, p, p});  // (D, C, p, p)
  patch_.w = cpu::LinearWeight(pw.view({D, C * p * p}), w.precision());
  class_emb_ = w.f32(e + "class_embedding", {D});
  pos_emb_ = w.f32(e + "position_embedding.weight", {cfg.num_positions(), D});
  pre_ln_ = w.layernorm(prefix + "pre_layrnorm", D, cfg.layer_norm_eps);
  if (with_post_layernorm) post_ln_ = w.layernorm(prefix + "post_layernorm", D, cfg.layer_norm_eps);
  ops::Activation act = ops::activation_from_name(cfg.hidden_act);
  layers_.clear();
  for (int il = 0; il < n_layers; ++il) {
    const std::string l = prefix + "encoder.layers." + std::to_string(il) + ".";
    nn::ViTBlock b;
    b.ln1 = w.layernorm(l + "layer_norm1", D, cfg.layer_norm_eps);
    b.ln2 = w.layernorm(l + "layer_norm2", D, cfg.layer_norm_eps);
    b.q = w.linear(l + "self_attn.q_proj", D, D, true);
    b.k = w.linear(l + "self_attn.k_proj", D, D, true);
    b.v = w.linear(l + "self_attn.v_proj", D, D, true);
    b.o = w.linear(l + "self_attn.out_proj", D, D, true);
    b.fc1 = w.linear(l + "mlp.fc1", I, D, true);
    b.fc2 = w.linear(l + "mlp.fc2", D, I, true);
    b.act = act;
    b.n_head = cfg.num_attention_heads;
    layers_.push_back(std::move(b));
  }
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

}  // namespace iris::models
