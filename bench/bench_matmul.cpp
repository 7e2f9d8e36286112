// Matrix-product throughput of the backend (cpu::LinearWeight) on the shapes of real models:
// GFLOP/s for prefill-sized products, GB/s of weight traffic for M = 1 (decode).
// Usage: bench_matmul [-t threads]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "cpu/gemm.h"
#include "cpu/threads.h"

using namespace iris;

static double run(const cpu::LinearWeight& w, int64_t M, int reps) {
  const int64_t K = w.in_features(), N = w.out_features();
  std::vector<float> x(size_t(M * K), 0.5f), y(size_t(M * N));
  w.forward(x.data(), M, K, y.data(), N);  // warm up (creates the primitive)
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    w.forward(x.data(), M, K, y.data(), N);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "-t")) threads = std::atoi(argv[i + 1]);
  cpu::set_num_threads(threads);
  std::printf("threads: %d\n", cpu::num_threads());
  struct Shape { const char* what; int64_t M, N, K; };
  const Shape shapes[] = {{"ViT-L qkv/o 577x1024x1024", 577, 1024, 1024},
                          {"ViT-L fc1   577x4096x1024", 577, 4096, 1024},
                          {"ViT-L fc2   577x1024x4096", 577, 1024, 4096},
                          {"LM mlp      512x3456x1280", 512, 3456, 1280},
                          {"decode mlp    1x3456x1280", 1, 3456, 1280},
                          {"decode down   1x1280x3456", 1, 1280, 3456},
                          {"decode head   1x32064x1280", 1, 32064, 1280}};
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0, 0.02f);
  std::printf("%-28s %10s %10s %8s\n", "shape (MxNxK)", "f32", "bf16", "ratio");
  for (const Shape& s : shapes) {
    Tensor w = Tensor::empty({s.N, s.K});
    for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = nd(g);
    double t[2];
    int k = 0;
    for (auto p : {cpu::MatmulPrecision::F32, cpu::MatmulPrecision::BF16}) {
      cpu::LinearWeight lw(w, p);
      t[k++] = run(lw, s.M, s.M == 1 ? 50 : 5);
    }
    if (s.M == 1) {
      double gb32 = double(s.N * s.K * 4) / t[0] / 1e9, gb16 = double(s.N * s.K * 2) / t[1] / 1e9;
      std::printf("%-28s %7.1f GB/s %5.1f GB/s %6.2fx faster (%.3f / %.3f ms)\n", s.what, gb32, gb16, t[0] / t[1],
                  t[0] * 1e3, t[1] * 1e3);
    } else {
      double fl = 2.0 * double(s.M * s.N * s.K);
      std::printf("%-28s %6.1f GF/s %6.1f GF/s %6.2fx\n", s.what, fl / t[0] / 1e9, fl / t[1] / 1e9, t[0] / t[1]);
    }
  }
  return 0;
}
