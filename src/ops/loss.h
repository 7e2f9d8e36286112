// Cross-entropy over rows of logits with integer targets (the language-model loss), forward and backward fused.
#pragma once
#include <cmath>
#include <cstdint>

namespace iris::ops {

// logits (rows, vocab), targets (rows). Rows whose target == ignore_index are skipped; any other target must be
// in [0, vocab) (iris::Error otherwise). Returns the SUM over counted rows of -log softmax(logits)[target] and
// writes the number of counted rows to *count (count may be nullptr). dlogits (rows, vocab), optional, gets
// scale * (softmax - onehot) on counted rows and 0 on ignored rows; it may alias logits (in-place gradient).
double cross_entropy_forward_backward(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                      int64_t* count, float* dlogits, float scale, int32_t ignore_index = -100);

namespace ref {

template <typename T>
double cross_entropy_forward_backward(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                      int64_t* count, T* dlogits, T scale, int32_t ignore_index = -100) {
  double total = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * vocab;
    if (targets[r] == ignore_index) {
      if (dlogits)
        for (int64_t i = 0; i < vocab; ++i) dlogits[r * vocab + i] = T(0);
      continue;
    }
    T m = x[0];
    for (int64_t i = 1; i < vocab; ++i) m = x[i] > m ? x[i] : m;
    T s = 0;
    for (int64_t i = 0; i < vocab; ++i) s += std::exp(x[i] - m);
    T lse = m + std::log(s);
    total += double(lse - x[targets[r]]);
    ++counted;
    if (dlogits)
      for (int64_t i = 0; i < vocab; ++i)
        dlogits[r * vocab + i] = scale * (std::exp(x[i] - lse) - (i == targets[r] ? T(1) : T(0)));
  }
  if (count) *count = counted;
  return total;
}

}  // namespace ref
}  // namespace iris::ops
