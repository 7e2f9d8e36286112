// Thread count for the OpenMP pool (and so for oneDNN).
#include "cpu/threads.h"

namespace iris::cpu {

static int g_threads = 0;
static thread_local int t_override = 0;

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  g_threads = n;
  omp_set_num_threads(n);
}

int num_threads() {
  if (t_override > 0) return t_override;
  if (g_threads <= 0) g_threads = omp_get_max_threads();
  return g_threads;
}

ScopedThreads::ScopedThreads(int n) : prev_override_(t_override), prev_omp_(omp_get_max_threads()) {
  t_override = n > 0 ? n : 1;
  omp_set_num_threads(t_override);  // a per-thread setting in OpenMP
}

ScopedThreads::~ScopedThreads() {
  t_override = prev_override_;
  omp_set_num_threads(prev_omp_);
}

}  // namespace iris::cpu
