// Elementwise kernels: memory-bound loops, vectorised with masked tails and split across threads only when
// the array is large enough to pay for a parallel region.
#include "ops/elementwise.h"

#include <algorithm>

#include "cpu/threads.h"
#include "ops/simd.h"

namespace iris::ops {

using namespace simd;

namespace {
constexpr int64_t kGrain = 32768;
}

void add(const float* a, const float* b, float* y, int64_t n) {
  cpu::parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    for_chunks(e - s, [&](int64_t i, int c) { store_n(y + s + i, load_n(a + s + i, c) + load_n(b + s + i, c), c); });
  });
}

void add_inplace(float* y, const float* x, int64_t n) { add(y, x, y, n); }

void scale_inplace(float* y, float s, int64_t n) {
  VecF vs = set1(s);
  cpu::parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for_chunks(e - b, [&](int64_t i, int c) { store_n(y + b + i, load_n(y + b + i, c) * vs, c); });
  });
}

void add_bias_rows(float* y, const float* b, int64_t rows, int64_t n) {
  if (n <= 0) return;
  cpu::parallel_for(rows, std::max<int64_t>(1, kGrain / n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = y + r * n;
      for_chunks(n, [&](int64_t i, int c) { store_n(yr + i, load_n(yr + i, c) + load_n(b + i, c), c); });
    }
  });
}

void sum_rows_accumulate(const float* dy, float* db, int64_t rows, int64_t n) {
  constexpr int64_t kBlock = 4 * kLanes;  // columns held in registers while walking the rows
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  cpu::parallel_for(nblocks, std::max<int64_t>(1, 4096 / std::max<int64_t>(rows, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kBlock, ncols = std::min(kBlock, n - c0);
      const int nv = int((ncols + kLanes - 1) / kLanes);
      VecF acc[4] = {zero(), zero(), zero(), zero()};
      for (int64_t r = 0; r < rows; ++r)
        for (int v = 0; v < nv; ++v)
          acc[v] = acc[v] + load_n(dy + r * n + c0 + v * kLanes, int(std::min<int64_t>(kLanes, ncols - v * kLanes)));
      for (int v = 0; v < nv; ++v) {
        const int cnt = int(std::min<int64_t>(kLanes, ncols - v * kLanes));
        float* p = db + c0 + v * kLanes;
        store_n(p, load_n(p, cnt) + acc[v], cnt);
      }
    }
  });
}

}  // namespace iris::ops
