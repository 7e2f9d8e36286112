// Contrastive (CLIP-style) pretraining of a VLM's vision tower, behind `iris train --objective clip`: image-caption
// pairs, the VLM's own vision tower on the image side (embeddings, pre-layernorm and the layers up to the LLaVA
// feature layer train; everything else stays byte-identical) and a small Llama-style causal text encoder created
// from a seed on the text side, both projected to a shared space and trained with CLIP's symmetric cross-entropy.
//
//   image (3, H, W) -> vision tower to the feature layer -> rows the projector would see (no class token under
//     the "default" select strategy) -> mean over rows (Dv) -> W_image (E, Dv) -> L2-normalise -> a_i (E)
//   caption -> the VLM's tokenizer (BOS as it adds it) + EOS -> text encoder -> final-normed hidden state at the
//     last token (Dt) -> W_text (E, Dt) -> L2-normalise -> b_j (E)
//   logits L = exp(s) A B^T (B, B), s learnable (init ln(1/0.07), clamped to [0, ln 100] after each step as CLIP
//     does); loss = (CE over rows + CE over columns) / 2, each the mean over the batch.
//
// Activations: every image's and caption's activations of a batch are kept until the backward (the models this
// is for are small; --grad-checkpointing keeps only each layer's input and recomputes the rest).
//
// Data: the captions JSONL groups by image (`iris data shapes` writes several captions per image). An epoch is a
// permutation of the images from (seed, epoch); each image gets one of its captions per epoch from (seed, epoch,
// image). A step takes the next batch_size images of the order (an epoch's final partial batch is dropped), so a
// step's batch is a pure function of (seed, step): a resumed run sees exactly the batches of an uninterrupted one.
//
// The run folder holds clip_config.json (so `--resume DIR` needs nothing else), step-N/ checkpoints (vision
// tensors by HF name, the text encoder's under "text_encoder.", the heads under "clip."), metrics.jsonl (with the
// in-batch retrieval accuracies), loss.svg and, at the end, final/ (the whole VLM as a Hugging Face folder) and
// text_encoder/ (a LlamaForCausalLM folder, plus clip_heads.safetensors and clip_config.json).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "models/config.h"
#include "train/trainable.h"

namespace iris::train {

struct ClipConfig {
  std::string objective = "clip";  // written to clip_config.json, as TrainerConfig's objective
  std::string model, captions, images, out;
  std::string regions;        // optional region-phrase JSONL: the region loss is added (see above)
  double region_weight = 1.0;  // weight of the region loss in the step's loss
  int text_layers = 2, text_hidden = 128, text_heads = 4, embed_dim = 128;
  int max_text_tokens = 77;  // longer captions are cut (the last kept token becomes EOS), as CLIP's context
  std::string optimizer = "adamw";
  // AdamW with CLIP's betas and eps; weight decay on matrices only (not norms, biases, the logit scale).
  double lr = 1e-3, momentum = 0, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.98, eps = 1e-6, max_grad_norm = 1.0;
  bool decay_all = false;
  std::string schedule = "cosine";
  int64_t warmup = 0;
  int epochs = 1, batch_size = 64;
  int64_t max_steps = 0;  // 0: epochs decide
  int64_t save_every = 100;
  int keep_last = 3;
  uint64_t seed = 0;
  bool checkpointing = false;
  std::string dtype = "f32";  // matrix-product precision of the trained layers
  int workers = 2;            // image-loading threads

  nlohmann::json to_json() const;
  static ClipConfig from_json(const nlohmann::json& j);
};

// Whether dir holds a CLIP run (its clip_config.json).
bool is_clip_run(const std::string& dir);


// The region-level contrastive head (the --regions loss): K regions of the batch's images, each pooled from its
// image's rows with its own weights, against the batch's U distinct region texts.
struct RegionBatch {
  std::vector<int64_t> image;   // (K) the region's image in the batch
  std::vector<float> weights;   // (K, R) pooling weights over that image's rows (each region's sum to 1)
  std::vector<int64_t> target;  // (K) the region's text in `texts`
  std::vector<std::vector<int32_t>> texts;  // (U) the batch's distinct region texts, token ids (BOS..EOS)
  int64_t regions() const { return int64_t(image.size()); }
};

// The contrastive head over one batch of B pairs, forward and backward.
struct ClipHeadShape {
  int64_t B = 0;   // pairs
  int64_t R = 0;   // rows pooled per image
  int64_t Dv = 0;  // image feature width
  int64_t Dt = 0;  // text feature width
  int64_t E = 0;   // shared embedding width
};
// Gradients wanted (null: not needed). Input gradients are written; the weight gradients are ADDED to.
struct ClipHeadGrads {
  float* image_rows = nullptr;  // (B, R, Dv)
  float* text = nullptr;        // (B, Dt)
  float* w_image = nullptr;     // (E, Dv)
  float* w_text = nullptr;      // (E, Dt)
  float* logit_scale = nullptr; // (1)
};
struct ClipHeadResult {
  double loss = 0;              // (CE over rows + CE over columns) / 2, mean over the batch
  int64_t correct_i2t = 0;      // images whose highest logit is their own caption (first maximum on ties)
  int64_t correct_t2i = 0;      // captions whose highest logit is their own image
};
// image_rows (B, R, Dv), text (B, Dt), w_image (E, Dv), w_text (E, Dt), logit_scale s (logits scale by exp(s)).
// Computed in double; pair i is (image i, caption i).
ClipHeadResult clip_head_forward_backward(const ClipHeadShape& shape, const float* image_rows, const float* text,
                                          const float* w_image, const float* w_text, float logit_scale,
                                          const ClipHeadGrads& grads);

// The region head: region k's feature is sum_r weights[k, r] image_rows[image[k], r] (Dv), projected by w_image
// and normalised as the image embeddings; the texts (U, Dt) as captions. Loss: the mean over regions of the
// cross-entropy of region k's logits over the U texts against target[k] (the columns have no loss: several
// regions may share a text). correct_i2t counts regions whose highest logit is their text; correct_t2i is 0.
// Gradients as clip_head_forward_backward's (image_rows and text written, weights added).
ClipHeadResult region_head_forward_backward(const ClipHeadShape& shape, const float* image_rows, const RegionBatch& rb,
                                            const float* text, const float* w_image, const float* w_text,
                                            float logit_scale, const ClipHeadGrads& grads);

// The pooling weights of one region over the rows of an image: the patches (grid x grid, patch pixels each, of the
// preprocessed image) whose centres lie inside box (x0, y0, x1, y1 in preprocessed pixels), equal weights; when no
// centre does, the patch holding the box centre. rows = grid^2 (+1 with the class token first, weight 0). Empty
// when the box lies entirely outside the image.
std::vector<float> region_row_weights(const std::array<double, 4>& box, int64_t grid, int64_t patch, int64_t rows);

// The text encoder's configuration: a LlamaForCausalLM of cfg.text_layers layers, width cfg.text_hidden,
// cfg.text_heads heads, MLP ~2.7x (a multiple of 8), over `vocab` tokens, embeddings tied to the LM head.
models::ModelConfig clip_text_encoder_config(const ClipConfig& cfg, int64_t vocab, std::optional<int32_t> bos,
                                             int32_t eos);

// Both towers and the heads: what trains and one batch forward and backward.
class ClipTowers {
 public:
  // vlm: a LLaVA loaded with its whole vision tower, f32; text: the text encoder (an f32 Llama). The layers that
  // train compute with owned master copies from here on; the heads are initialised from cfg.seed (projections
  // normal with std width^-0.5 as CLIP, the logit scale ln(1/0.07)).
  ClipTowers(models::Vlm& vlm, models::Vlm& text, const ClipConfig& cfg);
  ClipTowers(const ClipTowers&) = delete;
  ClipTowers& operator=(const ClipTowers&) = delete;

  // Every trained tensor under its checkpoint name: the vision tower's by HF name, the text encoder's prefixed
  // "text_encoder.", then "clip.visual_projection.weight" (E, Dv), "clip.text_projection.weight" (E, Dt) and
  // "clip.logit_scale" (1).
  const std::vector<std::pair<std::string, Param*>>& params() const { return params_; }
  void zero_grad();
  // One batch: pixels[i] (3, H, W) normalised, captions[i] its caption's ids (pair i). With backward, ADDS the
  // gradients of the mean loss to the params; all B images' and captions' activations are kept until then.
  // regions (may be null or empty): the region loss, scaled by region_weight, is added to the step's loss;
  // *region_result (when non-null) gets its result.
  ClipHeadResult forward_backward(const std::vector<std::vector<float>>& pixels,
                                  const std::vector<std::vector<int32_t>>& captions, bool backward = true,
                                  const RegionBatch* regions = nullptr, double region_weight = 1.0,
                                  ClipHeadResult* region_result = nullptr);
  // After the values changed (an optimizer step, a restored checkpoint): refresh the packed copies.
  void weights_updated();
  // CLIP's clamp of the logit scale to [0, ln 100], after each optimizer step.
  void clamp_logit_scale();
  float logit_scale() const;
  // The heads as saved beside the text encoder: visual_projection.weight, text_projection.weight, logit_scale.
  io::NamedTensors heads() const;
  TrainableVlm& vision() { return *vision_; }
  TrainableVlm& text() { return *text_; }
  int64_t image_tokens() const { return T_; }  // vision tokens per image (patches + class token)
  int64_t rows() const { return R_; }          // rows pooled per image (patches, + the class token unless dropped)
  int64_t grid() const { return grid_; }       // patches per side
  int64_t patch() const { return patch_; }     // pixels per patch side

 private:
  models::Vlm& vlm_;
  models::Vlm& text_model_;
  bool checkpointing_;
  std::unique_ptr<TrainableVlm> vision_, text_;
  std::unique_ptr<Param> w_image_, w_text_, logit_scale_;
  std::vector<std::pair<std::string, Param*>> params_;
  int fl_ = 0;
  bool drop_cls_ = true;
  int64_t C_ = 0, HW_ = 0, Dv_ = 0, T_ = 0, R_ = 0, Dt_ = 0, E_ = 0, grid_ = 0, patch_ = 0;
};

// Runs (or, with resume, continues from out/'s latest checkpoint) a contrastive run. Returns the final loss.
double run_clip_training(const ClipConfig& cfg, bool resume);

}  // namespace iris::train
