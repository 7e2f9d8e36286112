// Loads a model's weights from a checkpoint by name, checking every shape: a mismatch names the tensor and both
// shapes. Matrix weights become LinearWeights (used from the mapping when stored in f32 and computed in f32);
// vectors (norms, biases) and embeddings are converted to f32 once.
// The same loader can instead *create* every weight it is asked for (random init), so an architecture's weight
// names live in one place: its load function. As it loads, the loader records every weight as a training slot and
// every linear as a LoRA slot (SlotRecord), under the component the part set (set_component): training, LoRA,
// saving and merging work from that record, never from a second list of names.
#pragma once
#include <functional>
#include <random>
#include <set>
#include <string>

#include "io/safetensors.h"
#include "nn/blocks.h"
#include "nn/layers.h"

namespace iris::models {

// How a created weight is initialised.
enum class Init { Normal, Zeros, Ones };

// The weights and linears a model's parts loaded, in load order. A parameter is kept as a function that makes its
// slots when asked, from the layer as it is then (so a slot always holds the tensor the layer computes with now).
// Component: "vision", "projector" or "llm"; "" for weights that are loaded and saved but not used by the
// forward (LLaVA's vision layers past the feature layer): they never train and take no adapter.
struct SlotRecord {
  struct Param {
    std::string component;
    std::function<void(std::vector<nn::ParamSlot>&)> make;
  };
  std::vector<Param> params;
  std::vector<nn::LinearSlot> linears;

  // The slots of one component, or of every recorded weight for "*".
  std::vector<nn::ParamSlot> param_slots(const std::string& component) const;
  // The linears that can take a LoRA adapter (those of a component).
  std::vector<nn::LinearSlot> linear_slots() const;
};

class WeightLoader {
 public:
  // Reads from a checkpoint.
  WeightLoader(const io::Checkpoint& ckpt, cpu::MatmulPrecision precision) : ckpt_(&ckpt), precision_(precision) {}
  // Creates weights: matrices and embeddings ~ N(0, std), biases 0, norm weights 1, deterministic in seed.
  WeightLoader(uint64_t seed, float std, cpu::MatmulPrecision precision)
      : precision_(precision), rng_(seed), std_(std) {}

  bool creating() const { return ckpt_ == nullptr; }
  bool has(const std::string& name) const { return ckpt_ ? ckpt_->has(name) : created_index_.count(name) != 0; }
  // The tensor as stored (any float dtype), shape-checked.
  Tensor raw(const std::string& name, const Shape& shape, Init init = Init::Normal);
  // Converted to f32 (a view of the mapping when already f32).
  Tensor f32(const std::string& name, const Shape& shape, Init init = Init::Normal);
  // Load into the layer (which must stay where it is: the record points at it) and record its slots.
  void linear(nn::Linear& dst, const std::string& prefix, int64_t out, int64_t in, bool bias);
  void layernorm(nn::LayerNorm& dst, const std::string& prefix, int64_t dim, float eps);
  void rmsnorm(nn::RMSNorm& dst, const std::string& prefix, int64_t dim, float eps);
  // Records a weight the part loads itself (an embedding table, a convolution kept as a matrix ...).
  void record(std::function<void(std::vector<nn::ParamSlot>&)> make) {
    record_.params.push_back({component_, std::move(make)});
  }
  // Records a linear the part loaded itself as a LoRA slot (its weights through record()).
  void record_linear(const std::string& module, nn::Linear* l) {
    if (!component_.empty()) record_.linears.push_back({module, component_, l});
  }
  // The component the weights loaded from now on belong to.
  void set_component(const std::string& c) { component_ = c; }
  const std::string& component() const { return component_; }
  SlotRecord take_record() { return std::move(record_); }

  cpu::MatmulPrecision precision() const { return precision_; }
  // Tensors of the checkpoint under `prefix` that no layer asked for, except those a part skipped on purpose.
  std::vector<std::string> unused(const std::string& prefix = "") const;
  // Marks the checkpoint's tensors under this prefix as deliberately not loaded (LLaVA's vision layers past the
  // feature layer): they are not reported as unused.
  void skip(const std::string& prefix) { skipped_.push_back(prefix); }
  // The weights created so far, in creation order (creating mode).
  const io::NamedTensors& created() const { return created_; }

 private:
  const io::Checkpoint* ckpt_ = nullptr;
  cpu::MatmulPrecision precision_;
  std::set<std::string> used_;
  std::vector<std::string> skipped_;
  std::mt19937_64 rng_;
  float std_ = 0.02f;
  io::NamedTensors created_;
  std::set<std::string> created_index_;
  std::string component_ = "llm";
  SlotRecord record_;
};

// One pre-LN encoder layer with Hugging Face's CLIP / SigLIP names under prefix l ("...encoder.layers.N."):
// layer_norm1/2, self_attn.{q,k,v,out}_proj, mlp.fc1/fc2, all with biases.
void load_vit_block(WeightLoader& w, nn::ViTBlock& b, const std::string& l, int64_t D, int64_t I, float eps,
                    ops::Activation act, int n_head);

}  // namespace iris::models
