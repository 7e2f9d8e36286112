// Embedding kernels. Ids are checked up front (outside any parallel region, so the error can be thrown).
// The backward splits the columns among threads, so repeated ids never race and the sum order is fixed.
#include "ops/embedding.h"

#include <algorithm>
#include <cstring>

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

namespace {

void check_ids(const int32_t* ids, int64_t n, int64_t vocab, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    IRIS_CHECK(ids[i] >= 0 && int64_t(ids[i]) < vocab, what, ": token id ", ids[i], " at position ", i,
               " is out of range for vocab size ", vocab);
}

}  // namespace

void embedding_forward(const float* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, float* out) {
  IRIS_CHECK(dim > 0 && n >= 0, "embedding: bad shape dim=", dim, " n=", n);
  check_ids(ids, n, vocab, "embedding");
  cpu::parallel_for(n, std::max<int64_t>(1, 32768 / dim), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(out + i * dim, table + int64_t(ids[i]) * dim, size_t(dim) * sizeof(float));
  });
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, float* dtable, int64_t vocab, int64_t dim) {
  using namespace simd;
  IRIS_CHECK(dim > 0 && n >= 0, "embedding_backward: bad shape dim=", dim, " n=", n);
  check_ids(ids, n, vocab, "embedding_backward");
  constexpr int64_t kBlock = 256;  // columns per task
  const int64_t nblocks = (dim + kBlock - 1) / kBlock;
  cpu::parallel_for(nblocks, std::max<int64_t>(1, 256 / std::max<int64_t>(n, 1)), [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * kBlock, c1 = std::min(dim, b1 * kBlock);
    for (int64_t i = 0; i < n; ++i) {
      float* dst = dtable + int64_t(ids[i]) * dim + c0;
      const float* src = dout + i * dim + c0;
      for_chunks(c1 - c0, [&](int64_t j, int c) { store_n(dst + j, load_n(dst + j, c) + load_n(src + j, c), c); });
    }
  });
}

}  // namespace iris::ops
