// The training loop behind `iris train --data ...`: a data loader, a TrainableVlm, an optimizer with a schedule,
// gradient accumulation and clipping, atomic checkpoints every N steps, resume, progress, metrics and the loss
// plot. The run folder holds train_config.json (so `--resume DIR` needs nothing else), step-N/ checkpoints,
// metrics.jsonl, loss.svg and, at the end, final/ (a Hugging Face folder, plus adapter/ with LoRA).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/optim.h"
#include "vision/preprocess.h"

namespace iris::models {
class Vlm;
}

namespace iris::train {

struct TrainerConfig {
  // "llava": conversations (--data) or captions (--captions) with images, by stage; "lm": next-token
  // pretraining of the language model alone on plain text (--text files; packed windows of max_tokens).
  std::string objective = "llava";
  std::string model, data, captions, images, out;
  std::vector<std::string> text;  // lm: .txt, .jsonl or LLaVA .json files (data::read_text_documents)
  int stage = 2, lora_rank = 0;
  float lora_alpha = 16, lora_dropout = 0;
  std::vector<std::string> train, freeze;                // components ("vision", "projector", "llm") overriding the stage
  std::vector<std::string> lora_targets, lora_components;  // empty: the stage's defaults
  std::string optimizer = "adamw";
  double lr = 2e-4, momentum = 0, weight_decay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, max_grad_norm = 1.0;
  // Base learning rates of the components' parameter groups (LLaVA's mm_vision_tower_lr, mm_projector_lr);
  // 0: lr. The schedule scales every group alike.
  double lr_vision = 0, lr_projector = 0, lr_llm = 0;
  bool decay_all = false;
  std::string schedule = "cosine";
  int64_t warmup = 0;
  int epochs = 1, batch_size = 4, grad_accum = 1;
  int64_t max_steps = 0;  // 0: epochs decide
  int64_t save_every = 100;
  int keep_last = 3;
  int64_t max_tokens = 2048;
  int64_t min_pixels = 0, max_pixels = 0;  // Qwen2-VL's pixel budget per training image (0: the folder's)
  uint64_t seed = 0;
  bool strict = false, augment = false, group_by_length = false, checkpointing = false;
  std::string dtype = "f32";  // matrix-product precision of trained layers
  int workers = 2;
  // Data parallelism on one machine: this many model replicas, each on one thread with its own gradients,
  // process a step's examples (example k on replica k mod N); gradients are summed in replica order, so a run
  // is deterministic for a given N. For small models, whose products are too small to spread over cores.
  int replicas = 1;

  nlohmann::json to_json() const;
  static TrainerConfig from_json(const nlohmann::json& j);
};

struct TrainSpec;
class TrainableVlm;
struct ScheduleConfig;
// The TrainSpec of a configuration: the stage's, then --train/--freeze per component and the LoRA settings
// (objective lm: the language model alone, fully or through LoRA).
TrainSpec make_spec(const TrainerConfig& cfg);

// The image preprocessing of a model folder: its preprocessor_config.json, else a CLIP resize and centre crop to the
// vision tower's image size.
vision::PreprocessConfig preprocess_for(const models::Vlm& m, const std::string& dir);

// The optimizer's view of the trained tensors, in TrainableVlm::params() order, with each tensor's base learning
// rate (its component's --lr-vision/--lr-projector/--lr-llm, else --lr). Throws when a component's rate is
// negative or is given for a component that does not train.
struct ParamGroups {
  std::vector<ParamRef> refs;
  std::vector<double> base_lr;
  // Sets every ref's lr to its base rate scheduled for `step` (as LambdaLR does for each param group).
  void schedule(const ScheduleConfig& sc, int64_t step);
};
ParamGroups param_groups(TrainableVlm& tv, const TrainerConfig& cfg);

// Runs (or, when out/ holds a checkpoint and resume is set, continues) a training run. Returns the final loss.
double run_training(const TrainerConfig& cfg, bool resume);

}  // namespace iris::train
