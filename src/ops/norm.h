// Row normalisations: RMSNorm (Llama) and LayerNorm (CLIP ViT), forward and backward.
// x, y, dy, dx are (rows, dim) row-major; w, b, dw, db are (dim); mean, rstd are (rows).
// Forward: mean/rstd are optional outputs (nullptr when not training); y may alias x.
// Backward: dx is overwritten and may alias dy; dw/db are ACCUMULATED (+=) so gradients of shared weights sum;
// dw/db may be nullptr (frozen weights). Results do not depend on the thread count.
#pragma once
#include <cmath>
#include <cstdint>

namespace iris::ops {

// y = x / sqrt(mean(x^2) + eps) * w; HF LlamaRMSNorm (the weight multiplies after normalising in f32).
void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim, float eps);
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      int64_t rows, int64_t dim);

// y = (x - mean) / sqrt(var + eps) * w + b, biased variance (torch.nn.LayerNorm). b may be nullptr.
void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t dim, float eps);
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t rows, int64_t dim);

// Naive references (straight loops over the definitions).
namespace ref {

template <typename T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, T eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    T rs = T(1) / std::sqrt(ss / T(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = xr[i] * rs * w[i];
    if (rstd) rstd[r] = rs;
  }
}

// With y_i = x_i r w_i and r = (mean(x^2) + eps)^-1/2: dr/dx_j = -r^3 x_j / dim, so
// dx_j = r w_j dy_j - r^3 x_j / dim * sum_i dy_i w_i x_i, and dw_i += dy_i x_i r.
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T rs = rstd[r];
    T dot = 0;
    for (int64_t i = 0; i < dim; ++i) dot += dyr[i] * w[i] * xr[i];
    for (int64_t i = 0; i < dim; ++i) {
      if (dw) dw[i] += dyr[i] * xr[i] * rs;
      dx[r * dim + i] = rs * w[i] * dyr[i] - rs * rs * rs * xr[i] * dot / T(dim);
    }
  }
}

template <typename T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows, int64_t dim, T eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T mu = 0;
    for (int64_t i = 0; i < dim; ++i) mu += xr[i];
    mu /= T(dim);
    T var = 0;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mu) * (xr[i] - mu);
    var /= T(dim);
    T rs = T(1) / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = (xr[i] - mu) * rs * w[i] + (b ? b[i] : T(0));
    if (mean) mean[r] = mu;
    if (rstd) rstd[r] = rs;
  }
}

// With xhat = (x - mean) r and g = dy w: dx = r (g - mean(g) - xhat mean(g xhat)); dw += dy xhat; db += dy.
template <typename T>
void layernorm_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx, T* dw, T* db,
                        int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T mu = mean[r], rs = rstd[r];
    T mg = 0, mgx = 0;
    for (int64_t i = 0; i < dim; ++i) {
      T xhat = (xr[i] - mu) * rs;
      mg += dyr[i] * w[i];
      mgx += dyr[i] * w[i] * xhat;
    }
    mg /= T(dim);
    mgx /= T(dim);
    for (int64_t i = 0; i < dim; ++i) {
      T xhat = (xr[i] - mu) * rs;
      if (dw) dw[i] += dyr[i] * xhat;
      if (db) db[i] += dyr[i];
      dx[r * dim + i] = rs * (dyr[i] * w[i] - mg - xhat * mgx);
    }
  }
}

}  // namespace ref
}  // namespace iris::ops
