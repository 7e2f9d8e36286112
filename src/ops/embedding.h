// Token embedding lookup: out (n, dim) = table (vocab, dim) rows at ids (n), and its gradient.
#pragma once
#include <cstdint>

namespace iris::ops {

// Throws iris::Error naming the id and vocab when an id is outside [0, vocab).
void embedding_forward(const float* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, float* out);
// dtable (vocab, dim) += dout (n, dim) scattered by ids (repeated ids sum). Same id check.
void embedding_backward(const int32_t* ids, int64_t n, const float* dout, float* dtable, int64_t vocab, int64_t dim);

namespace ref {

template <typename T>
void embedding_forward(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) out[i * dim + d] = table[int64_t(ids[i]) * dim + d];
}
template <typename T>
void embedding_backward(const int32_t* ids, int64_t n, const T* dout, T* dtable, int64_t vocab, int64_t dim) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) dtable[int64_t(ids[i]) * dim + d] += dout[i * dim + d];
}

}  // namespace ref
}  // namespace iris::ops
