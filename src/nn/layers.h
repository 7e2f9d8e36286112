// Shared layers: linear (with an optional LoRA adapter), layer norm, RMS norm, and the debugging tap that names
// intermediates by layer. Each layer has an inference forward and a training pair: forward_train keeps nothing
// itself (the caller keeps the input and the statistics it is handed), backward takes them back.
// Gradients: a layer accumulates (+=) into the gradient buffers its grad_* pointers name; a null pointer means
// the tensor is frozen and no work is spent on its gradient (the input gradient still flows through).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cpu/gemm.h"
#include "tensor/tensor.h"

namespace iris::nn {

// Called with each named intermediate ("attn_norm", layer index, data (rows, cols)); used by tests and by the
// IRIS_DUMP_DIR debug dump. il = -1 for tensors outside the layer stack.
using Tap = std::function<void(std::string_view name, int il, const float* data, int64_t rows, int64_t cols)>;

// LoRA adapter of a linear layer, PEFT semantics: y += scale * dropout(x) A^T B^T with scale = alpha / rank.
// Dropout acts in training forwards only. Its mask is a hash of (dropout_seed, element index), so the backward
// (and a checkpointed recomputation) regenerates it instead of storing it.
struct LoraAdapter {
  Tensor A;  // (r, in) f32
  Tensor B;  // (out, r) f32
  float scale = 1.0f;
  float dropout = 0.0f;
  uint64_t dropout_seed = 0;
  float* grad_A = nullptr;  // (r, in); nullptr: not trained
  float* grad_B = nullptr;  // (out, r)
  int64_t rank() const { return A.dim(0); }
  bool trains() const { return grad_A || grad_B; }
};

// Whether element `index` of a LoRA input survives dropout with probability p, for a given seed (the mask
// depends only on these, so it is reproducible).
bool lora_dropout_keep(uint64_t seed, int64_t index, float p);

struct Linear {
  cpu::LinearWeight w;  // (out, in)
  Tensor b;             // (out,) f32, or undefined when the layer has no bias
  float* grad_w = nullptr;  // (out, in) f32; only for an f32 weight (training binds an owned f32 master copy)
  float* grad_b = nullptr;  // (out,)
  std::unique_ptr<LoraAdapter> lora;

  int64_t in_features() const { return w.in_features(); }
  int64_t out_features() const { return w.out_features(); }
  const float* bias() const { return b.defined() ? b.data<float>() : nullptr; }
  bool trains() const { return grad_w || grad_b || (lora && lora->trains()); }

  // y (M, out) = x (M, in) W^T + b (+ the adapter, without dropout); with accumulate, y += ... (residuals).
  void forward(const float* x, int64_t M, float* y, bool accumulate = false) const {
    w.forward(x, M, in_features(), y, out_features(), bias(), accumulate);
    if (lora) lora_forward(x, M, y, false);
  }
  // The same with the adapter's dropout applied (training).
  void forward_train(const float* x, int64_t M, float* y, bool accumulate = false) const {
    w.forward(x, M, in_features(), y, out_features(), bias(), accumulate);
    if (lora) lora_forward(x, M, y, true);
  }
  // x (M, in): the input of the forward; dy (M, out). dx (M, in) = dy W (+ the adapter's path), overwritten or,
  // with accumulate_dx, added; nullptr when not needed. Accumulates the gradients of what trains here.
  void backward(const float* x, const float* dy, int64_t M, float* dx, bool accumulate_dx = false) const;

 private:
  void lora_forward(const float* x, int64_t M, float* y, bool train) const;
};

struct LayerNorm {
  Tensor w, b;  // (dim,) f32
  float eps = 1e-5f;
  float* grad_w = nullptr;  // (dim,)
  float* grad_b = nullptr;
  int64_t dim() const { return w.numel(); }
  bool trains() const { return grad_w || grad_b; }
  void forward(const float* x, float* y, int64_t rows) const;
  // Also writes mean and rstd (rows) for the backward; y may alias x only when x is not needed later.
  void forward_train(const float* x, float* y, float* mean, float* rstd, int64_t rows) const;
  // dx (rows, dim) overwritten (may alias dy).
  void backward(const float* x, const float* mean, const float* rstd, const float* dy, float* dx, int64_t rows) const;
};

struct RMSNorm {
  Tensor w;  // (dim,) f32
  float eps = 1e-6f;
  float* grad_w = nullptr;  // (dim,)
  int64_t dim() const { return w.numel(); }
  bool trains() const { return grad_w != nullptr; }
  void forward(const float* x, float* y, int64_t rows) const;
  void forward_train(const float* x, float* y, float* rstd, int64_t rows) const;
  void backward(const float* x, const float* rstd, const float* dy, float* dx, int64_t rows) const;
};

// One weight of a model as training sees it, named as Hugging Face names it: the tensor the layer holds now (any
// float dtype, maybe a view of a read-only-ish mapping), and how to make the layer compute with an owned f32
// master copy instead and accumulate into a gradient buffer (bind), and to refresh anything derived from the
// master after an in-place update (refresh: repacking a bf16 copy; empty when nothing is derived).
struct ParamSlot {
  std::string name;
  Tensor value;
  bool decay = true;  // false for norm weights and biases (the usual weight-decay exclusions)
  std::function<void(const Tensor& master, float* grad, cpu::MatmulPrecision precision)> bind;
  std::function<void()> refresh;
};

// A linear layer that can take a LoRA adapter: its module path ("language_model.model.layers.0.self_attn.q_proj")
// and the model component it belongs to ("vision", "projector" or "llm").
struct LinearSlot {
  std::string module;
  std::string component;
  Linear* linear = nullptr;
};

// Slots for a layer's tensors under a module prefix (e.g. "...self_attn.q_proj" -> ".weight", ".bias").
void linear_slots(const std::string& module, Linear& l, std::vector<ParamSlot>& out);
void layernorm_slots(const std::string& module, LayerNorm& n, std::vector<ParamSlot>& out);
void rmsnorm_slots(const std::string& module, RMSNorm& n, std::vector<ParamSlot>& out);
// A plain tensor (embedding table, class embedding ...) whose gradient pointer the owner keeps.
ParamSlot tensor_slot(const std::string& name, Tensor& t, float*& grad, bool decay);

}  // namespace iris::nn
