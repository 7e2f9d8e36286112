// Thread count for the OpenMP pool (and so for oneDNN).
#include "cpu/threads.h"

namespace iris::cpu {

static int g_threads = 0;

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  g_threads = n;
  omp_set_num_threads(n);
}

int num_threads() {
  if (g_threads <= 0) g_threads = omp_get_max_threads();
  return g_threads;
}

}  // namespace iris::cpu
