// A loaded model made of parts (models/parts.h): the family's image processor, vision encoder and connector (none
// for a text-only model) and the language model. models/registry.cpp picks the parts from config.json; the
// composite here encodes images, builds the prompt's embeddings and rotary positions, and runs the training
// forward/backward through whatever parts the model has.
#pragma once
#include <memory>
#include <optional>

#include "io/safetensors.h"
#include "models/config.h"
#include "models/llama.h"
#include "models/parts.h"
#include "models/weights.h"

namespace iris::models {

// When the environment variable IRIS_DUMP_DIR names a folder, a tap that writes every named intermediate there as
// <stage>.<name>.<layer>.npy (float32, (rows, cols)); otherwise an empty tap.
nn::Tap env_dump_tap(const std::string& stage);

enum class WeightPrecision { Auto, F32, BF16 };  // Auto: f32 for f32 checkpoints, bf16 otherwise

struct LoadOptions {
  WeightPrecision precision = WeightPrecision::Auto;
  bool full_vision_tower = false;  // load every vision layer and final norm (otherwise only what the model uses)
};

// A prompt ready for the language model: embeddings with the image rows spliced in, and rotary positions.
struct PromptInput {
  Tensor embeddings;     // (S, D)
  Positions positions;   // (streams, S)
  int64_t next_position = 0;  // the rotary position of the first token after the prompt (all streams)
};

// What the training forward keeps for the backward of the image path (one entry per image).
struct ImageActs {
  std::unique_ptr<PartActs> vision, connector;
  int64_t feat_rows = 0;
};

class ClipVision;

class Vlm {
 public:
  Vlm();
  ~Vlm();
  // Loads a Hugging Face folder: config.json, the safetensors, and the image processor's files.
  static std::unique_ptr<Vlm> load(const std::string& dir, const LoadOptions& opt = {});
  // A model with freshly initialised weights (the whole vision tower), named as Hugging Face names them
  // (transformers 4.47 layout): for tests, benchmarks and training from scratch.
  static std::unique_ptr<Vlm> create(const ModelConfig& cfg, uint64_t seed, float std = 0.02f);
  // The created weights (create() only).
  const io::NamedTensors& created_weights() const { return created_; }
  // Copies the files beside the weights that a model folder needs (tokenizer, tokenizer_config, image processor,
  // chat template, generation config) from one folder to another, where they exist.
  static void copy_side_files(const std::string& from_dir, const std::string& to_dir);
  // Writes a Hugging Face folder: config.json, model.safetensors (weights converted to `dtype`), and, when
  // tokenizer_dir is given, its tokenizer.json / tokenizer_config.json; the family's image-processor files.
  static void save_folder(const std::string& dir, const ModelConfig& cfg, const io::NamedTensors& weights, DType dtype,
                          const std::string& tokenizer_dir = "");

  const ModelConfig& config() const { return cfg_; }
  bool has_vision() const { return vision_ != nullptr; }
  const Llama& text() const { return text_; }
  Llama& text_mut() { return text_; }
  // The parts of the image path (has_vision() only).
  const ImageProcessor& processor() const;
  const VisionEncoder& vision() const;
  const Connector& connector() const;
  VisionEncoder& vision_mut();
  Connector& connector_mut();
  // The CLIP tower of a LLaVA model (CLIP-style pretraining); an error for other families.
  const ClipVision& clip_vision() const;
  // Every weight with its Hugging Face name, as the layers compute with it now (a trained master copy, merged
  // LoRA weights ...), plus the checkpoint's tensors no layer loaded (as stored): what a saved folder holds.
  io::NamedTensors state();
  // Slots of every loaded weight (vision layers past LLaVA's feature layer included): state(), merging adapters.
  std::vector<nn::ParamSlot> all_param_slots();
  // Training slots of a component ("vision", "projector", "llm") and every linear that can take a LoRA adapter.
  std::vector<nn::ParamSlot> param_slots(const std::string& component);
  std::vector<nn::LinearSlot> linear_slots();
  // The checkpoint's tensors that no part loaded (load() only; llama.cpp's loader reports the same).
  const std::vector<std::string>& unused_tensors() const { return unused_; }
  cpu::MatmulPrecision precision() const { return precision_; }
  int32_t image_token_id() const { return has_vision() ? processor().image_token_id() : -1; }

  // One processed image -> its embeddings (n_tokens, D) and token grid. The tap sees the parts' intermediates
  // ("vision_hidden": the encoder's last hidden state before selection or merging).
  ImageFeatures encode_image(const ImagePixels& px, const nn::Tap& tap = nullptr) const;
  // Image features for training: through the parts' training forwards when keep (acts receives what the backward
  // needs), else the inference forward.
  ImageFeatures encode_image_train(const ImagePixels& px, bool keep, ImageActs& acts, bool checkpointing) const;
  // The backward of encode_image_train: dy (n_tokens, D) the gradient of the embeddings.
  void encode_image_backward(ImageActs& acts, const float* dy) const;
  // Whether anything at or below the connector trains.
  bool image_path_trains() const;

  // Embeds ids, overwrites the rows at image-token positions, in order, with the images' embeddings, and gives
  // every token its rotary position (Qwen2-VL's M-RoPE: get_rope_index). The count of image tokens must equal
  // the rows given.
  PromptInput prepare_prompt(const std::vector<int32_t>& ids, const std::vector<ImageFeatures>& images) const;
  Tensor embed_prompt(const std::vector<int32_t>& ids, const std::vector<ImageFeatures>& images) const {
    return prepare_prompt(ids, images).embeddings;
  }

 private:
  void build(WeightLoader& w, bool full_vision_tower, const std::string& dir);

  ModelConfig cfg_;
  io::Checkpoint ckpt_;
  io::NamedTensors created_;
  std::vector<std::string> unused_;
  SlotRecord slots_;  // every weight and linear, as the parts loaded them
  cpu::MatmulPrecision precision_ = cpu::MatmulPrecision::F32;
  std::unique_ptr<ImageProcessor> processor_;
  std::unique_ptr<VisionEncoder> vision_;
  std::unique_ptr<Connector> connector_;
  Llama text_;

  friend struct Registry;
};

}  // namespace iris::models
