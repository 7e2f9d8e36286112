// Shared pieces of the benchmark programs: a wall clock and the memory read bandwidth that bounds decode speed.
#pragma once
#include <omp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cpu/threads.h"

namespace iris::bench {

using Clock = std::chrono::steady_clock;

inline double secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Memory read bandwidth (GB/s) with the current thread count: sums a 1 GiB buffer, best of 3. Decode streams
// every weight once per token, so this bounds decode speed.
inline double read_bandwidth() {
  const int64_t n = (int64_t(1) << 30) / 8;
  static std::vector<uint64_t> buf(size_t(n), 1);
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    std::vector<uint64_t> part(size_t(cpu::num_threads()) * 8, 0);
    cpu::parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
      uint64_t s = 0;  // integer sums vectorise freely (no FP reassociation needed)
      for (int64_t i = b; i < e; ++i) s += buf[size_t(i)];
      part[size_t(omp_get_thread_num()) * 8] += s;
    });
    best = std::min(best, secs(t0));
    if (part[0] == 42) std::printf("?");
  }
  return double(n) * 8 / best / 1e9;
}

}  // namespace iris::bench
