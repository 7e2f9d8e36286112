// Cross-entropy kernel: rows in parallel; per row a max pass, an exp-sum pass (storing the exponentials in
// the gradient when one is wanted), and a pass scaling them to scale * softmax. Per-row losses are summed in row order afterwards, so the total does not
// depend on the thread count.
#include "ops/loss.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

double cross_entropy_forward_backward(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                      int64_t* count, float* dlogits, float scale, int32_t ignore_index) {
  using namespace simd;
  IRIS_CHECK(rows >= 0 && vocab > 0, "cross_entropy: bad shape rows=", rows, " vocab=", vocab);
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index) continue;
    IRIS_CHECK(targets[r] >= 0 && int64_t(targets[r]) < vocab, "cross_entropy: target ", targets[r], " at row ", r,
               " is out of range for vocab size ", vocab, " (ignore_index is ", ignore_index, ")");
    ++counted;
  }
  std::vector<double> row_loss(size_t(rows), 0.0);
  cpu::parallel_for(rows, std::max<int64_t>(1, 16384 / vocab), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = logits + r * vocab;
      float* dx = dlogits ? dlogits + r * vocab : nullptr;
      const int32_t t = targets[r];
      if (t == ignore_index) {
        if (dx) std::fill(dx, dx + vocab, 0.0f);
        continue;
      }
      const float xt = x[t];  // read before dx (which may alias x) is written
      const VecF ninf = set1(-std::numeric_limits<float>::infinity());
      VecF vm = ninf;
      for_chunks(vocab, [&](int64_t i, int c) {
        vm = max(vm, c == kLanes ? load(x + i) : select(tail_mask(c), load_n(x + i, c), ninf));
      });
      const float m = reduce_max(vm);
      // exp(x - max) summed; with a gradient wanted the exponentials are kept in dx (x is not read again, so
      // dx may alias it) and scaled by scale / sum afterwards: one exp per logit.
      const VecF vmax = set1(m);
      VecF s0 = zero(), s1 = zero();
      int64_t i = 0;
      for (; i + 2 * kLanes <= vocab; i += 2 * kLanes) {
        const VecF e0 = exp(load(x + i) - vmax), e1 = exp(load(x + i + kLanes) - vmax);
        if (dx) {
          store(dx + i, e0);
          store(dx + i + kLanes, e1);
        }
        s0 = s0 + e0;
        s1 = s1 + e1;
      }
      for (; i < vocab; i += kLanes) {
        const int c = int(std::min<int64_t>(kLanes, vocab - i));
        const VecF e = select(tail_mask(c), exp(load_n(x + i, c) - vmax), zero());
        if (dx) store_n(dx + i, e, c);
        s0 = s0 + e;
      }
      const float sum = reduce_add(s0 + s1);
      row_loss[size_t(r)] = double(m) + std::log(double(sum)) - double(xt);
      if (dx) {
        const VecF vk = set1(scale / sum);
        for_chunks(vocab, [&](int64_t j, int c) { store_n(dx + j, load_n(dx + j, c) * vk, c); });
        dx[t] -= scale;
      }
    }
  });
  double total = 0;
  for (double l : row_loss) total += l;
  if (count) *count = counted;
  return total;
}

}  // namespace iris::ops
