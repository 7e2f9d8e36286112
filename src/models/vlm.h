// A loaded model: the Llama decoder and, for LLaVA, the CLIP vision tower and the projector. The registry reads
// config.json and picks the architecture; weights come from the folder's safetensors.
#pragma once
#include <memory>
#include <optional>

#include "io/safetensors.h"
#include "models/config.h"
#include "models/llama.h"
#include "models/projector_mlp.h"
#include "models/vit_clip.h"

namespace iris::models {

// When the environment variable IRIS_DUMP_DIR names a folder, a tap that writes every named intermediate there as
// <stage>.<name>.<layer>.npy (float32, (rows, cols)); otherwise an empty tap.
nn::Tap env_dump_tap(const std::string& stage);

enum class WeightPrecision { Auto, F32, BF16 };  // Auto: f32 for f32 checkpoints, bf16 otherwise

struct LoadOptions {
  WeightPrecision precision = WeightPrecision::Auto;
  bool full_vision_tower = false;  // load every vision layer and post_layernorm (otherwise only what LLaVA uses)
};

// What encode_image can report besides the image embeddings (for parity work).
struct ImageEncoding {
  Tensor embeddings;        // (n_tokens, text_dim): projector output, the rows spliced at the image tokens
  Tensor selected_layer;    // (tokens, vision_dim): hidden state of the feature layer, class token first
  Tensor features;          // (n_tokens, vision_dim): after the select strategy
};

class Vlm {
 public:
  static std::unique_ptr<Vlm> load(const std::string& dir, const LoadOptions& opt = {});
  // A model with freshly initialised weights (the whole vision tower, LLaVA-1.5's MLP projector), named as
  // Hugging Face names them (transformers 4.47 layout): for tests, benchmarks and training from scratch.
  static std::unique_ptr<Vlm> create(const ModelConfig& cfg, uint64_t seed, float std = 0.02f);
  // The created weights (create() only).
  const io::NamedTensors& created_weights() const { return created_; }
  // Writes a Hugging Face folder: config.json, model.safetensors (weights converted to `dtype`), and, when
  // tokenizer_dir is given, its tokenizer.json / tokenizer_config.json; for LLaVA a preprocessor_config.json.
  // Copies the files beside the weights that a model folder needs (tokenizer, tokenizer_config, image processor,
  // chat template, generation config) from one folder to another, where they exist.
  static void copy_side_files(const std::string& from_dir, const std::string& to_dir);
  static void save_folder(const std::string& dir, const ModelConfig& cfg, const io::NamedTensors& weights, DType dtype,
                          const std::string& tokenizer_dir = "");

  const ModelConfig& config() const { return cfg_; }
  bool has_vision() const { return cfg_.arch == Architecture::Llava; }
  const Llama& text() const { return text_; }
  const ClipVision& vision() const { return vision_; }
  const MlpProjector& projector() const { return projector_; }
  // Mutable pieces, for training (train/ binds master copies, gradients and LoRA adapters into their layers).
  Llama& text_mut() { return text_; }
  ClipVision& vision_mut() { return vision_; }
  MlpProjector& projector_mut() { return projector_; }
  // Every weight with its Hugging Face name, as the layers compute with it now (a trained master copy, merged
  // LoRA weights ...), plus the checkpoint's tensors no layer loaded (as stored): what a saved folder holds.
  io::NamedTensors state();
  // The linear layers that can take a LoRA adapter, vision (the layers LLaVA uses), projector and decoder.
  std::vector<nn::LinearSlot> linear_slots();
  cpu::MatmulPrecision precision() const { return precision_; }
  int image_token_id() const { return cfg_.llava.image_token_index; }
  int64_t image_tokens_per_image() const { return has_vision() ? cfg_.llava.image_tokens_per_image() : 0; }
  int64_t image_size() const { return cfg_.llava.vision.image_size; }

  // pixels (C, H, W) normalised -> image embeddings.
  ImageEncoding encode_image(const float* pixels, int64_t C, int64_t H, int64_t W, const nn::Tap& tap = nullptr) const;

  // Embeds ids and overwrites the rows at image-token positions, in order, with the rows of `images`
  // ((k * n_tokens, D) for k images). The count of image tokens must equal the rows given.
  Tensor embed_prompt(const std::vector<int32_t>& ids, const std::vector<Tensor>& images) const;

 private:
  void build(WeightLoader& w, bool full_vision_tower);

  ModelConfig cfg_;
  io::Checkpoint ckpt_;
  io::NamedTensors created_;
  cpu::MatmulPrecision precision_ = cpu::MatmulPrecision::F32;
  ClipVision vision_;
  MlpProjector projector_;
  Llama text_;
};

}  // namespace iris::models
