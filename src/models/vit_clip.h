// CLIP vision tower (CLIPVisionTransformer): patch convolution as a matrix product, class token, learned
// position embeddings, pre_layrnorm, pre-LN encoder layers, post_layernorm. Inference forward, and the training
// forward/backward pair (the backward is the forward loop in reverse; optional per-layer recomputation).
#pragma once
#include "models/config.h"
#include "models/parts.h"
#include "models/weights.h"
#include "nn/blocks.h"

namespace iris::models {

// What the vision tower keeps for its backward.
struct ClipVisionActs {
  int64_t T = 0;                            // tokens: patches + class token
  int n_layers = 0;
  bool checkpointing = false;
  std::vector<float> cols;                  // (np, C*p*p) patches, for the patch weight gradient
  std::vector<float> emb;                   // (T, D) embeddings before pre_layrnorm
  std::vector<float> pre_mean, pre_rstd;    // (T)
  std::vector<nn::ViTBlockActs> layers;     // one per layer, or one reused when checkpointing
  std::vector<std::vector<float>> inputs;   // checkpointing: each layer's input (T, D)
  std::vector<float> out;                   // (T, D) output of the last layer run
};

class ClipVision {
 public:
  // prefix: e.g. "vision_tower.vision_model."; loads the first n_layers encoder layers (-1: all) and, when
  // with_post_layernorm, the final norm (LLaVA never uses it). The weights are recorded under the loader's
  // component, except layers from used_layers on (-1: none) and post_layernorm: those are recorded under "" (saved,
  // never trained).
  void load(WeightLoader& w, const std::string& prefix, const ClipVisionConfig& cfg, int n_layers, bool with_post_layernorm,
            int used_layers = -1);

  const ClipVisionConfig& config() const { return cfg_; }
  int loaded_layers() const { return int(layers_.size()); }
  int64_t tokens() const { return cfg_.num_positions(); }

  // pixels (C, H, W), normalised, H = W = image_size. Runs the embeddings and the first n_layers encoder layers
  // and returns the residual stream (tokens, D): class token first, then the patches row by row.
  // The tap sees "embeddings" (after pre_layrnorm, il = -1) and "layer_out" for each layer.
  Tensor forward(const float* pixels, int64_t C, int64_t H, int64_t W, int n_layers, const nn::Tap& tap = nullptr) const;
  // post_layernorm of rows (rows, D).
  Tensor post_layernorm(const Tensor& x) const;

  // Training forward: like forward, keeping activations (with checkpointing only each layer's input, the rest is
  // recomputed layer by layer in the backward). The output is a.out (T, D).
  void forward_train(const float* pixels, int64_t C, int64_t H, int64_t W, int n_layers, ClipVisionActs& a,
                     bool checkpointing) const;
  // dout (T, D): the gradient of a.out (destroyed). Accumulates the gradients of what trains; no pixel gradient.
  void backward(ClipVisionActs& a, float* dout) const;
  bool trains(int n_layers) const;

 private:
  void embed_train(const float* pixels, int64_t C, int64_t H, int64_t W, ClipVisionActs& a) const;

  ClipVisionConfig cfg_;
  std::string prefix_;      // "vision_tower.vision_model." or the newer layout's
  float* grad_class_emb_ = nullptr;  // (D,) when trained
  float* grad_pos_emb_ = nullptr;    // (num_positions, D)
  nn::Linear patch_;        // (D, C*p*p), no bias
  Tensor class_emb_;        // (D,)
  Tensor pos_emb_;          // (num_positions, D)
  nn::LayerNorm pre_ln_, post_ln_;
  std::vector<nn::ViTBlock> layers_;
};

// LLaVA's use of a CLIP tower as a vision encoder part: the hidden state of vision_feature_layer, without the
// class token under the "default" select strategy. The tap sees "vision_hidden" (the selected layer, class token
// first) besides the tower's own intermediates.
class ClipEncoder : public VisionEncoder {
 public:
  // Loads the layers up to the feature layer, or every layer and post_layernorm when full_tower.
  void load(WeightLoader& w, const std::string& prefix, const LlavaConfig& c, bool full_tower);
  int64_t out_dim() const override { return tower_.config().hidden_size; }
  Tensor forward(const ImagePixels& px, const nn::Tap& tap = nullptr) const override;
  Tensor forward_train(const ImagePixels& px, std::unique_ptr<PartActs>& acts, bool checkpointing) const override;
  void backward(PartActs& acts, float* dfeat) const override;
  bool trains() const override { return tower_.trains(feature_layer_); }
  const ClipVision& tower() const { return tower_; }

 private:
  void check_pixels(const ImagePixels& px) const;
  ClipVision tower_;
  int feature_layer_ = 0;
  bool drop_cls_ = true;
};

// 2-D sine-cosine position embeddings for a (num_positions, hidden_size) position_embedding table, as MAE
// initialises its ViT: the first half of each row encodes the patch's grid row, the second half its column, each as
// sin and cos at hidden_size/4 frequencies 1/10000^(i/(hidden_size/4)). The class token's row is zero. A tower that
// starts from these carries each patch's place in the image at the scale of its content; from N(0, 0.02) the
// positions stay about 2% of a patch's embedding after CLIP-style training, and the tower's output barely says where
// a patch is. Every value is multiplied by `scale`. hidden_size must be a multiple of 4.
Tensor sincos_positions_2d(const ClipVisionConfig& cfg, float scale = 1.0f);

}  // namespace iris::models
