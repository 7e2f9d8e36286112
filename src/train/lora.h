// LoRA adapters as PEFT makes, saves, loads and merges them.
//   init:   A (r, in) ~ kaiming_uniform(a = sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)), B (out, r) = 0;
//           scale = alpha / r (alpha / sqrt(r) with use_rslora).
//   files:  adapter_config.json + adapter_model.safetensors; keys "base_model.model.<module>.lora_A.weight" and
//           ".lora_B.weight", <module> the Hugging Face module path ("language_model.model.layers.0.self_attn.q_proj");
//           fully trained tensors saved alongside under "base_model.model.<HF name>" (PEFT's modules_to_save).
//   merge:  W += scale * B A.
// Names are matched across the two LLaVA checkpoint layouts of transformers (<= 4.51 "language_model.model.*",
// newer "model.language_model.*"), so an adapter trained on either loads on either.
#pragma once
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "models/vlm.h"

namespace iris::train {

class TrainableVlm;

// A fresh adapter for a linear (in -> out): A from the generator, B zeros.
std::unique_ptr<nn::LoraAdapter> make_lora_adapter(int64_t in, int64_t out, int rank, float scale,
                                                   std::mt19937_64& rng);

// "q" -> "q_proj" etc.; other names unchanged.
std::string lora_target_name(const std::string& short_or_full);
// The last path segment of a module path.
std::string module_short_name(const std::string& module);
// A weight/module name in the older transformers LLaVA layout (the newer layout's names are mapped; others pass).
std::string canonical_name(const std::string& name);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors for the model's LoRA tensors (and its fully
// trained tensors as modules_to_save). base_model: recorded as base_model_name_or_path (may be empty).
void save_peft_adapter(const std::string& dir, const TrainableVlm& tv, const std::string& base_model = "");

// Loads a PEFT LoRA adapter folder onto a model for inference: attaches an adapter to every linear it names
// (replacing any adapter there) and replaces the weights it carries as modules_to_save. Errors name the key, the
// file and what was expected (unknown module, wrong shapes, DoRA or other unsupported options).
void apply_lora_adapter(models::Vlm& model, const std::string& dir);

// Merges every attached adapter into its weight (W += scale B A, as an owned f32 tensor) and removes the
// adapters; Vlm::state() then gives the merged weights for saving. Returns the number merged.
int merge_lora(models::Vlm& model);

}  // namespace iris::train
