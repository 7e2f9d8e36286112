// The one thread pool: OpenMP (the runtime oneDNN also uses, so there is no oversubscription). Kernels take a
// work range [begin, end) and are run through parallel_for; nothing else in iris creates compute threads.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace iris::cpu {

void set_num_threads(int n);  // n <= 0: all cores
int num_threads();             // this thread's: its ScopedThreads override, else the process-wide setting

// Runs the calling thread's parallel regions (and so oneDNN's products) on n threads until destroyed, without
// changing the process-wide setting: data-parallel training runs one model replica per thread with n = 1.
class ScopedThreads {
 public:
  explicit ScopedThreads(int n);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int prev_override_, prev_omp_;
};

// Splits [0, n) into at most num_threads() contiguous chunks of at least `grain` items and runs
// fn(begin, end) on each. Runs inline when there is only one chunk or when already inside a parallel region.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1 || omp_in_parallel()) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel for num_threads(int(chunks)) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) fn(b, e);
  }
}

}  // namespace iris::cpu
