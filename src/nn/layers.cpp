// Norm layers over the ops kernels.
#include "nn/layers.h"

#include "ops/norm.h"

namespace iris::nn {

void LayerNorm::forward(const float* x, float* y, int64_t rows) const {
  ops::layernorm_forward(x, w.data<float>(), b.data<float>(), y, nullptr, nullptr, rows, dim(), eps);
}

void RMSNorm::forward(const float* x, float* y, int64_t rows) const {
  ops::rmsnorm_forward(x, w.data<float>(), y, nullptr, rows, dim(), eps);
}

}  // namespace iris::nn
