// A model prepared for training: which weights train (the LLaVA stages, LoRA), owned f32 master copies of those
// and their gradient buffers (frozen weights get neither), and the loss with its gradient over one example.
//
// One example at a time, whole sequence at positions 0..S-1, causal, no KV cache; batches are gradient
// accumulation over examples by the caller. The loss is Hugging Face's: cross-entropy of the logits at position t
// against labels[t + 1] (the shift happens here), label -100 ignored. forward_backward returns the SUM over
// supervised tokens and their count; the caller divides (grad_scale = 1 / total count gives HF's mean).
//
// The model is changed in place: trained layers compute with the master copies (so after training the Vlm *is*
// the trained model) and LoRA adapters are attached to its linears. The optimizer updates Param::value in place
// and then calls weights_updated().
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "models/vlm.h"

namespace iris::train {

// LoRA on chosen linear layers (PEFT semantics: y = x W^T + b + (alpha / rank) dropout(x) A^T B^T, A (r, in)
// kaiming-uniform like PEFT, B (out, r) zeros).
struct LoraSpec {
  int rank = 0;  // 0: no LoRA
  float alpha = 16.0f;
  float dropout = 0.0f;
  bool use_rslora = false;  // scale alpha / sqrt(rank) instead of alpha / rank (PEFT's use_rslora)
  // Module short names: "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"
  // (decoder); "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2" (vision); "linear_1", "linear_2"
  // (projector). The short forms "q", "k", "v", "o", "gate", "up", "down" are accepted. Empty: every linear of
  // the chosen components except lm_head.
  std::vector<std::string> targets;
  std::vector<std::string> components;  // "vision", "projector", "llm"; empty: {"llm"}
};

struct TrainSpec {
  // Fully trained components (every weight gets a master copy and a gradient). A component with LoRA keeps its
  // base weights frozen, so it may not also be fully trained.
  bool train_vision = false, train_projector = true, train_llm = false;
  LoraSpec lora;
  bool checkpointing = false;  // keep only each layer's input; recompute the rest in the backward
  // Arithmetic of the trained linears' forward products (bf16: packed copies of the masters, refreshed by
  // weights_updated). Frozen layers keep the model's precision. Gradients are always f32.
  cpu::MatmulPrecision precision = cpu::MatmulPrecision::F32;
  uint64_t seed = 0;  // LoRA initialisation and dropout masks
};

// The LLaVA stages: 1 projector only; 2 projector + LLM (full when lora_rank == 0, else LoRA on every decoder
// linear); 3 everything (with lora_rank > 0: projector full, LoRA on the vision tower and the decoder).
TrainSpec stage_spec(int stage, int lora_rank = 0);

struct Example {
  std::vector<int32_t> ids;     // (S) with the image token repeated once per image embedding
  std::vector<int32_t> labels;  // (S) -100 = not supervised; the shift by one happens inside
  // The images, in image-token order: processed pixels in the family's layout (any family), or, for LLaVA,
  // flat (3, H, W) normalised values at the tower's size in pixel_values.
  std::vector<models::ImagePixels> images;
  std::vector<std::vector<float>> pixel_values;
};

// Number of supervised targets after the shift (labels[1..S) that are not -100).
int64_t supervised_count(const Example& ex);

struct Param {
  std::string name;  // Hugging Face name (PEFT name for LoRA tensors)
  Tensor value;      // f32, owned, updated in place by the optimizer
  Tensor grad;       // f32, same shape, accumulated by forward_backward
  bool decay = true; // false for norms and biases by default
  std::string component;  // "vision", "projector" or "llm" (a LoRA tensor: the component it adapts)
};

class TrainableVlm {
 public:
  TrainableVlm(models::Vlm& model, const TrainSpec& spec);
  TrainableVlm(const TrainableVlm&) = delete;
  TrainableVlm& operator=(const TrainableVlm&) = delete;

  std::vector<Param*> params();  // trained tensors only
  Param* find(const std::string& name);
  const TrainSpec& spec() const { return spec_; }
  models::Vlm& model() { return model_; }

  // Forward + backward over one example: ADDS grad_scale * d(sum of token losses) / d(param) into the grads.
  // Returns the summed loss and the number of supervised tokens.
  std::pair<double, int64_t> forward_backward(const Example& ex, float grad_scale);
  // Forward only (inference path: no dropout, nothing kept): the summed loss; *count gets the token count.
  double loss_only(const Example& ex, int64_t* count);
  void zero_grad();
  // After an optimizer step: refresh what is derived from the weights (bf16 packed copies).
  void weights_updated();
  // Every weight with its HF name (trained ones are the master copies; LoRA not merged): an HF folder's worth.
  io::NamedTensors full_state();
  // The LoRA tensors with PEFT names ("base_model.model.<module>.lora_A.weight", ...).
  io::NamedTensors adapter_state() const;
  // The fully trained tensors (HF names): what PEFT calls modules_to_save next to an adapter.
  io::NamedTensors trained_base_state() const;
  // The modules carrying a LoRA adapter, with their component ("vision", "projector", "llm").
  std::vector<std::pair<std::string, std::string>> adapted_modules() const;

 private:
  struct Adapter {
    std::string module;  // e.g. "language_model.model.layers.0.self_attn.q_proj"
    std::string component;
    nn::LoraAdapter* lora;
  };
  void add_param(nn::ParamSlot& slot, const std::string& component);
  void attach_lora();
  // The example's images as the family's pixels.
  std::vector<models::ImagePixels> example_images(const Example& ex) const;
  // Image embeddings for the example's images (training path when something at or below the projector trains).
  std::vector<models::ImageFeatures> encode_images(const Example& ex, bool keep);
  void check_example(const Example& ex) const;

  models::Vlm& model_;
  TrainSpec spec_;
  std::vector<std::unique_ptr<Param>> params_;
  std::vector<std::function<void()>> refresh_;
  std::vector<Adapter> adapters_;
  std::vector<std::string> lora_params_;  // names of params_ that are LoRA tensors
  uint64_t step_ = 0;
  // Activations of the current example's images.
  std::vector<models::ImageActs> image_acts_;
};

}  // namespace iris::train
