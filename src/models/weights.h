// Loads a model's weights from a checkpoint by name, checking every shape: a mismatch names the tensor and both
// shapes. Matrix weights become LinearWeights (used from the mapping when stored in f32 and computed in f32);
// vectors (norms, biases) and embeddings are converted to f32 once.
// The same loader can instead *create* every weight it is asked for (random init), so an architecture's weight
// names live in one place: its load function.
#pragma once
#include <random>
#include <set>
#include <string>

#include "io/safetensors.h"
#include "nn/layers.h"

namespace iris::models {

// How a created weight is initialised.
enum class Init { Normal, Zeros, Ones };

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
  nn::Linear linear(const std::string& prefix, int64_t out, int64_t in, bool bias);
  nn::LayerNorm layernorm(const std::string& prefix, int64_t dim, float eps);
  nn::RMSNorm rmsnorm(const std::string& prefix, int64_t dim, float eps);

  cpu::MatmulPrecision precision() const { return precision_; }
  // Tensors of the checkpoint under `prefix` that no layer asked for.
  std::vector<std::string> unused(const std::string& prefix = "") const;
  // The weights created so far, in creation order (creating mode).
  const io::NamedTensors& created() const { return created_; }

 private:
  const io::Checkpoint* ckpt_ = nullptr;
  cpu::MatmulPrecision precision_;
  std::set<std::string> used_;
  std::mt19937_64 rng_;
  float std_ = 0.02f;
  io::NamedTensors created_;
  std::set<std::string> created_index_;
};

}  // namespace iris::models
