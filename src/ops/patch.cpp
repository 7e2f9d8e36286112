// Patchify kernels: each patch row of the image (p pixel rows) is one task; every (c, ky) pair copies p
// contiguous pixels. Patches do not overlap (kernel = stride), so the backward writes disjoint pixels.
#include "ops/patch.h"

#include <algorithm>
#include <cstring>

#include "cpu/threads.h"
#include "tensor/error.h"

namespace iris::ops {

namespace {

void check_shape(int64_t C, int64_t H, int64_t W, int64_t p, const char* what) {
  IRIS_CHECK(C > 0 && p > 0 && H > 0 && W > 0, what, ": bad shape C=", C, " H=", H, " W=", W, " patch=", p);
  IRIS_CHECK(H % p == 0 && W % p == 0, what, ": image ", H, "x", W, " is not a multiple of the patch size ", p);
}

}  // namespace

void patchify(const float* pixels, int64_t C, int64_t H, int64_t W, int64_t p, float* cols) {
  check_shape(C, H, W, p, "patchify");
  const int64_t nH = H / p, nW = W / p, K = C * p * p;
  cpu::parallel_for(nH, 1, [&](int64_t y0, int64_t y1) {
    for (int64_t py = y0; py < y1; ++py)
      for (int64_t px = 0; px < nW; ++px) {
        float* dst = cols + (py * nW + px) * K;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < p; ++ky)
            std::memcpy(dst + (c * p + ky) * p, pixels + (c * H + py * p + ky) * W + px * p, size_t(p) * sizeof(float));
      }
  });
}

void patchify_backward(const float* dcols, int64_t C, int64_t H, int64_t W, int64_t p, float* dpixels) {
  check_shape(C, H, W, p, "patchify_backward");
  const int64_t nH = H / p, nW = W / p, K = C * p * p;
  cpu::parallel_for(nH, 1, [&](int64_t y0, int64_t y1) {
    for (int64_t py = y0; py < y1; ++py)
      for (int64_t px = 0; px < nW; ++px) {
        const float* src = dcols + (py * nW + px) * K;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < p; ++ky) {
            float* d = dpixels + (c * H + py * p + ky) * W + px * p;
            const float* s = src + (c * p + ky) * p;
            for (int64_t kx = 0; kx < p; ++kx) d[kx] += s[kx];
          }
      }
  });
}

}  // namespace iris::ops
