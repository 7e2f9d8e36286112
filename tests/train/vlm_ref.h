// Double-precision reference of the whole LLaVA-1.5 (or Llama) training loss, over weights by Hugging Face / PEFT
// name (tests/nn/block_ref.h's blocks): vision tower to the feature layer, select strategy, projector, splice at
// the image tokens, decoder, final norm, LM head (tied or not), cross-entropy summed over supervised tokens
// (logits at t against labels[t + 1]). For model-level central differences.
#pragma once
#include "models/config.h"
#include "nn/block_ref.h"
#include "ops/loss.h"
#include "ops/patch.h"
#include "train/trainable.h"

namespace iris::test {

inline Weights weights_of(const io::NamedTensors& named) {
  Weights w;
  for (const auto& [name, t] : named) {
    Tensor f = t.to(DType::F32);
    w[name].assign(f.data<float>(), f.data<float>() + f.numel());
  }
  return w;
}

inline double ref_vlm_loss(const models::ModelConfig& cfg, const Weights& w, const train::Example& ex,
                           const RefLoraOpts* lora = nullptr) {
  const bool llava = cfg.arch == models::Architecture::Llava;
  const std::string body = llava ? "language_model.model." : "model.";
  const std::string head = llava ? "language_model.lm_head.weight" : "lm_head.weight";
  const models::LlamaConfig& tc = cfg.text();
  const int64_t D = tc.hidden_size, V = tc.vocab_size, S = int64_t(ex.ids.size());

  // Image embeddings, in order.
  std::vector<std::vector<double>> images;
  if (llava) {
    const models::LlavaConfig& lc = cfg.llava;
    const models::ClipVisionConfig& vc = lc.vision;
    const std::string vp = "vision_tower.vision_model.", pp = "multi_modal_projector.";
    const int64_t Dv = vc.hidden_size, C = vc.num_channels, p = vc.patch_size, HW = vc.image_size;
    const int64_t np = (HW / p) * (HW / p), T = np + 1, K = C * p * p;
    RefVitShape vs{Dv, vc.intermediate_size, vc.num_attention_heads, vc.layer_norm_eps,
                   ops::activation_from_name(vc.hidden_act)};
    for (const auto& pxf : ex.pixel_values) {
      std::vector<double> px(pxf.begin(), pxf.end()), cols(size_t(np * K)), h(size_t(T * Dv)), x(size_t(T * Dv));
      ops::ref::patchify(px.data(), C, HW, HW, p, cols.data());
      ops::ref::linear_forward(cols.data(), at(w, vp + "embeddings.patch_embedding.weight").data(),
                               static_cast<const double*>(nullptr), x.data() + Dv, np, K, Dv);
      const auto& cls = at(w, vp + "embeddings.class_embedding");
      const auto& pos = at(w, vp + "embeddings.position_embedding.weight");
      for (int64_t j = 0; j < Dv; ++j) x[size_t(j)] = cls[size_t(j)];
      for (int64_t i = 0; i < T * Dv; ++i) x[size_t(i)] += pos[size_t(i)];
      ref_layernorm(w, vp + "pre_layrnorm", x.data(), h.data(), T, Dv, vc.layer_norm_eps);
      for (int il = 0; il < lc.feature_layer_index(); ++il)
        ref_vit_block(w, vp + "encoder.layers." + std::to_string(il) + ".", vs, h, T, lora);
      const bool drop_cls = lc.vision_feature_select_strategy == "default";
      const int64_t n = drop_cls ? T - 1 : T;
      std::vector<double> y1(size_t(n * D)), y2(size_t(n * D));
      ref_linear(w, pp + "linear_1", h.data() + (drop_cls ? Dv : 0), n, Dv, D, y1.data(), lora);
      if (w.count(pp + "linear_2.weight")) {
        ops::ref::activation_forward(ops::activation_from_name(lc.projector_hidden_act), y1.data(), y1.data(), n * D);
        ref_linear(w, pp + "linear_2", y1.data(), n, D, D, y2.data(), lora);
        y1 = y2;
      }
      images.push_back(y1);
    }
  }
  // Embeddings with the image rows spliced in.
  const auto& table = at(w, body + "embed_tokens.weight");
  std::vector<double> x(size_t(S * D));
  size_t img = 0, within = 0;
  for (int64_t t = 0; t < S; ++t) {
    double* row = x.data() + t * D;
    if (llava && ex.ids[size_t(t)] == cfg.llava.image_token_index) {
      while (within * size_t(D) >= images[img].size()) {
        ++img;
        within = 0;
      }
      std::copy_n(images[img].data() + within * size_t(D), D, row);
      ++within;
    } else {
      std::copy_n(table.data() + int64_t(ex.ids[size_t(t)]) * D, D, row);
    }
  }
  RefDecoderShape ds{D, tc.intermediate_size, tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim,
                     tc.rms_norm_eps, tc.rope_inv_freq()};
  for (int il = 0; il < tc.num_hidden_layers; ++il)
    ref_decoder_block(w, body + "layers." + std::to_string(il) + ".", ds, x, S, lora);
  std::vector<double> xn(x.size());
  ref_rmsnorm(w, body + "norm", x.data(), xn.data(), S, D, tc.rms_norm_eps);
  // Head and loss on the supervised rows.
  std::vector<double> hrows, logits;
  std::vector<int32_t> targets;
  for (int64_t t = 0; t + 1 < S; ++t)
    if (ex.labels[size_t(t + 1)] != -100) {
      hrows.insert(hrows.end(), xn.begin() + t * D, xn.begin() + (t + 1) * D);
      targets.push_back(ex.labels[size_t(t + 1)]);
    }
  const int64_t R = int64_t(targets.size());
  logits.resize(size_t(R * V));
  const std::string head_module = head.substr(0, head.size() - 7);
  if (w.count(head))
    ref_linear(w, head_module, hrows.data(), R, D, V, logits.data(), lora);
  else  // tied
    ops::ref::linear_forward(hrows.data(), table.data(), static_cast<const double*>(nullptr), logits.data(), R, D, V);
  return ops::ref::cross_entropy_forward_backward(logits.data(), targets.data(), R, V, nullptr,
                                                  static_cast<double*>(nullptr), 0.0);
}

}  // namespace iris::test
