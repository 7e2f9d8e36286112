// ViT patch embedding as a matrix product: im2col for a convolution with kernel = stride = p and no padding.
// pixels (C, H, W) -> cols (nH * nW, C * p * p), nH = H / p, nW = W / p; patches row by row (patch index
// py * nW + px), each patch ordered (c, ky, kx), so cols x W^T equals the conv with weight (D, C, p, p)
// flattened to (D, C * p * p).
#pragma once
#include <cstdint>

namespace iris::ops {

// H and W must be multiples of p (iris::Error otherwise).
void patchify(const float* pixels, int64_t C, int64_t H, int64_t W, int64_t p, float* cols);
// dpixels (C, H, W) += the gradient scattered back from dcols (nH * nW, C * p * p).
void patchify_backward(const float* dcols, int64_t C, int64_t H, int64_t W, int64_t p, float* dpixels);

namespace ref {

template <typename T>
void patchify(const T* pixels, int64_t C, int64_t H, int64_t W, int64_t p, T* cols) {
  const int64_t nH = H / p, nW = W / p, K = C * p * p;
  for (int64_t py = 0; py < nH; ++py)
    for (int64_t px = 0; px < nW; ++px)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < p; ++ky)
          for (int64_t kx = 0; kx < p; ++kx)
            cols[(py * nW + px) * K + (c * p + ky) * p + kx] = pixels[(c * H + py * p + ky) * W + px * p + kx];
}
template <typename T>
void patchify_backward(const T* dcols, int64_t C, int64_t H, int64_t W, int64_t p, T* dpixels) {
  const int64_t nH = H / p, nW = W / p, K = C * p * p;
  for (int64_t py = 0; py < nH; ++py)
    for (int64_t px = 0; px < nW; ++px)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < p; ++ky)
          for (int64_t kx = 0; kx < p; ++kx)
            dpixels[(c * H + py * p + ky) * W + px * p + kx] += dcols[(py * nW + px) * K + (c * p + ky) * p + kx];
}

}  // namespace ref
}  // namespace iris::ops
