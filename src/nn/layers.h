// Shared layers: linear, layer norm, RMS norm, and the debugging tap that names intermediates by layer.
// Inference forward passes live here; training keeps its own activations (see train/).
#pragma once
#include <functional>
#include <string>
#include <string_view>

#include "cpu/gemm.h"
#include "tensor/tensor.h"

namespace iris::nn {

// Called with each named intermediate ("attn_norm", layer index, data (rows, cols)); used by tests and by the
// IRIS_DUMP_DIR debug dump. il = -1 for tensors outside the layer stack.
using Tap = std::function<void(std::string_view name, int il, const float* data, int64_t rows, int64_t cols)>;

struct Linear {
  cpu::LinearWeight w;  // (out, in)
  Tensor b;             // (out,) f32, or undefined when the layer has no bias

  int64_t in_features() const { return w.in_features(); }
  int64_t out_features() const { return w.out_features(); }
  const float* bias() const { return b.defined() ? b.data<float>() : nullptr; }
  // y (M, out) = x (M, in) W^T + b; with accumulate, y += ... (residual connections).
  void forward(const float* x, int64_t M, float* y, bool accumulate = false) const {
    w.forward(x, M, in_features(), y, out_features(), bias(), accumulate);
  }
};

struct LayerNorm {
  Tensor w, b;  // (dim,) f32
  float eps = 1e-5f;
  int64_t dim() const { return w.numel(); }
  void forward(const float* x, float* y, int64_t rows) const;
};

struct RMSNorm {
  Tensor w;  // (dim,) f32
  float eps = 1e-6f;
  int64_t dim() const { return w.numel(); }
  void forward(const float* x, float* y, int64_t rows) const;
};

}  // namespace iris::nn
