// Softmax kernels: rows in parallel; per row one pass for the max, one for exp and its sum (the exponentials
// stored in y), one to scale by 1/sum.
#include "ops/softmax.h"

#include <algorithm>
#include <limits>

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

using namespace simd;

void softmax_forward(const float* x, float* y, int64_t rows, int64_t n) {
  IRIS_CHECK(rows >= 0 && n > 0, "softmax: bad shape (", rows, ", ", n, ")");
  const int64_t grain = std::max<int64_t>(1, 8192 / n);
  cpu::parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      VecF vm = set1(-std::numeric_limits<float>::infinity());
      for_chunks(n, [&](int64_t i, int c) {
        VecF v = c == kLanes ? load(xr + i) : select(tail_mask(c), load_n(xr + i, c), vm);
        vm = max(vm, v);  // NaN in x propagates
      });
      VecF m = set1(reduce_max(vm));
      VecF s = zero();
      for_chunks(n, [&](int64_t i, int c) {
        VecF e = exp(load_n(xr + i, c) - m);
        if (c < kLanes) e = select(tail_mask(c), e, zero());
        store_n(yr + i, e, c);
        s = s + e;
      });
      VecF inv = set1(1.0f / reduce_add(s));
      for_chunks(n, [&](int64_t i, int c) { store_n(yr + i, load_n(yr + i, c) * inv, c); });
    }
  });
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t n) {
  IRIS_CHECK(rows >= 0 && n > 0, "softmax_backward: bad shape (", rows, ", ", n, ")");
  const int64_t grain = std::max<int64_t>(1, 8192 / n);
  cpu::parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* yr = y + r * n;
      const float* dyr = dy + r * n;
      float* dxr = dx + r * n;
      VecF acc = zero();
      for_chunks(n, [&](int64_t i, int c) { acc = fmadd(load_n(yr + i, c), load_n(dyr + i, c), acc); });
      VecF dot = set1(reduce_add(acc));
      for_chunks(n, [&](int64_t i, int c) {
        store_n(dxr + i, load_n(yr + i, c) * (load_n(dyr + i, c) - dot), c);
      });
    }
  });
}

}  // namespace iris::ops
