// Training checkpoints: everything needed to continue a run exactly (weights, optimizer state, step, epoch,
// data position, RNG state), one folder per step, written so that a crash or a full disk at any moment leaves
// the last good checkpoint usable:
//
//   run_dir/step-00000100/weights.safetensors     trained tensors by name (f32 master weights)
//                         optimizer.safetensors   Optimizer::state()
//                         state.json              step, epoch, data position, RNG, extra (config echo,
//                         metrics),
//                                                 and the size of each file above (how completeness is
//                                                 checked)
//   run_dir/latest                                "step-00000100\n", rewritten atomically after each save
//
// save_checkpoint writes everything into run_dir/step-NNNNNNNN.tmp-<pid>-<n>/, fsyncs the files and the
// folder, renames it to step-NNNNNNNN/ (atomically exchanging an existing folder of that name), fsyncs
// run_dir, rewrites `latest`, and only then deletes checkpoints beyond the newest keep_last.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "train/optim.h"

namespace iris::train {

struct TrainState {
  int64_t step = 0;  // optimizer steps completed
  int64_t epoch = 0;
  int64_t data_position = 0;  // samples (or batches) of the epoch consumed, as the data loader counts them
  uint64_t rng_seed = 0;
  std::string rng_state;  // e.g. rng_to_string(engine)
  nlohmann::json extra;   // anything else: config echo, metrics so far, loader state
};

// Writes a checkpoint for state.step (see the header comment). keep_last <= 0 keeps every checkpoint. Throws
// iris::Error naming the path and the reason (unwritable folder, full disk, ...) after removing its temporary
// folder; the previous checkpoints and `latest` are then untouched.
void save_checkpoint(const std::string& run_dir, const TrainState& state, const io::NamedTensors& weights,
                     const Optimizer& optimizer, int keep_last);
// The same with an optimizer state given as tensors (Optimizer::state(), or a loaded checkpoint's).
void save_checkpoint(const std::string& run_dir, const TrainState& state, const io::NamedTensors& weights,
                     const io::NamedTensors& optimizer_state, int keep_last);

// Why `dir` is not a complete checkpoint (a missing, truncated or unreadable file, a malformed state.json),
// or nullopt when it is complete. Reads state.json and the safetensors headers only.
std::optional<std::string> checkpoint_problem(const std::string& dir);
inline bool is_complete_checkpoint(const std::string& dir) {
  return !checkpoint_problem(dir).has_value();
}

// The checkpoint folder to resume from: the one `latest` names when it is complete, otherwise the complete
// step-N folder with the largest N; nullopt when run_dir holds none (or does not exist).
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Complete checkpoint folders of run_dir, oldest first, as (step, path).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir);

struct LoadedCheckpoint {
  std::string dir;
  TrainState state;
  io::NamedTensors weights;    // f32, borrowed from the mapped file (copy them into the model's buffers)
  io::NamedTensors optimizer;  // for Optimizer::load_state
  std::string optimizer_kind;  // as saved ("adamw", "sgd"; empty when saved from bare tensors)
};
// Loads a checkpoint folder; throws naming the folder and the problem when it is incomplete or malformed.
LoadedCheckpoint load_checkpoint(const std::string& dir);

// Checkpoint folder name for a step: "step-00000100".
std::string checkpoint_name(int64_t step);

// RNG state as text (the standard library's stream format) and back; from_string throws on malformed text.
std::string rng_to_string(const std::mt19937_64& rng);
void rng_from_string(std::mt19937_64& rng, const std::string& text);

}  // namespace iris::train
