// Matrix-product throughput of the backend (cpu::LinearWeight) on the shapes of real models:
// GFLOP/s for prefill-sized products, GB/s of weight traffic for M = 1 (decode).
// Usage: bench_matmul [-t threads]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "bench_util.h"
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
  std::printf("threads: %d, memory read bandwidth %.1f GB/s\n", cpu::num_threads(), bench::read_bandwidth());
  struct Shape { const char* what; int64_t M, N, K; };
  const Shape shapes[] = {{"ViT-L qkv/o 577x1024x1024", 577, 1024, 1024},
                          {"ViT-L fc1   577x4096x1024", 577, 4096, 1024},
                          {"ViT-L fc2   577x1024x4096", 577, 1024, 4096},
                          {"LM mlp      512x3456x1280", 512, 3456, 1280},
                          {"decode mlp    1x3456x1280", 1, 3456, 1280},
                          {"decode down   1x1280x3456", 1, 1280, 3456},
                          {"decode head   1x32064x1280", 1, 32064, 1280},
                          {"decode head 1x151936x1536", 1, 151936, 1536}};
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
  // Decode through a whole stack of distinct bf16 weights (Qwen2-1.5B's 28 layers: q, k, v, o, gate, up, down;
  // 2.6 GB, far larger than any cache), as a decode step reads them: GB/s against the read bandwidth.
  {
    const int64_t D = 1536, kv = 256, I = 8960;
    const int64_t layer_shapes[7][2] = {{D, D}, {kv, D}, {kv, D}, {D, D}, {I, D}, {I, D}, {D, I}};
    std::vector<cpu::LinearWeight> ws;
    double bytes = 0;
    for (int l = 0; l < 28; ++l)
      for (auto& sh : layer_shapes) {
        Tensor w = Tensor::empty({sh[0], sh[1]}, DType::BF16);
        auto* p = static_cast<uint16_t*>(w.raw());
        for (int64_t i = 0; i < w.numel(); ++i) p[i] = uint16_t(0x3c00 + (i & 0xff));
        ws.emplace_back(w, cpu::MatmulPrecision::BF16);
        bytes += double(w.numel()) * 2;
      }
    std::vector<float> x(size_t(I), 0.5f), y(size_t(I), 0.0f);
    for (int r = 0; r < 3; ++r) {
      double bw = bench::read_bandwidth();
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 5; ++it)
        for (auto& w : ws) w.forward(x.data(), 1, w.in_features(), y.data(), w.out_features());
      double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 5;
      std::printf("decode stack (28 Qwen2-1.5B layers, %.2f GB bf16): %.1f GB/s, read bandwidth %.1f GB/s: %.0f%%\n",
                  bytes / 1e9, bytes / t / 1e9, bw, 100 * bytes / t / 1e9 / bw);
    }
  }
  return 0;
}
