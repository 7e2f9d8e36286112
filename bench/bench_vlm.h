// Shared pieces of the VLM benchmark programs (bench_qwen2_vl, bench_smolvlm): matrix-product timing on a model's
// shapes, a photo-like test image, and the prefill / decode measurement against the memory read bandwidth.
#pragma once
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "cpu/gemm.h"
#include "models/vlm.h"
#include "runtime/session.h"
#include "vision/image.h"

namespace iris::bench {

// Seconds of an (M, K) x (K, N) product through cpu::LinearWeight in the given precision (best of `reps`, after
// one warm-up call).
inline double matmul_seconds(int64_t M, int64_t N, int64_t K, cpu::MatmulPrecision prec, int reps) {
  Tensor w = Tensor::empty({N, K});
  std::mt19937 g(1);
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = d(g);
  cpu::LinearWeight lw(w, prec);
  std::vector<float> x(size_t(M * K), 0.5f), y(size_t(M * N));
  lw.forward(x.data(), M, K, y.data(), N);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    lw.forward(x.data(), M, K, y.data(), N);
    best = std::min(best, secs(t0));
  }
  return best;
}

// Matmul GFLOP/s of an (M, K) x (K, N) product in the given precision, best of 3.
inline double matmul_gflops(int64_t M, int64_t N, int64_t K, cpu::MatmulPrecision prec) {
  return 2.0 * double(M) * double(N) * double(K) / matmul_seconds(M, N, K, prec, 3) / 1e9;
}

// A photo-like test image: smooth gradients and a few discs (the content does not change the cost).
inline vision::Image test_image(int w, int h) {
  vision::Image img = vision::Image::zeros(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + 3 * x;
      p[0] = uint8_t(255 * x / w);
      p[1] = uint8_t(255 * y / h);
      p[2] = uint8_t(((x / 37) ^ (y / 29)) & 1 ? 200 : 40);
    }
  return img;
}

// Prefill of `in` (timed after a warm-up) and decode in 4 rounds, each right after its own read-bandwidth
// measurement (the machine is shared), counting the bytes a step reads: the language model's weights and the KV
// cache (f32 keys and values of every layer over the context). Prints tok/s and the share of the bandwidth.
inline void prefill_and_decode(const models::Vlm& m, const models::PromptInput& in, int64_t image_tokens, int n_decode,
                               bool bf16, const std::string& dtype) {
  const models::LlamaConfig& t = m.config().text();
  const int64_t S = in.embeddings.dim(0);
  runtime::Session s(m, S + n_decode + 8);
  s.prefill(in);  // warm up
  s.reset();
  auto t0 = Clock::now();
  s.prefill(in);
  const double pre = secs(t0);
  s.decode(5);  // warm up
  const int64_t qd = int64_t(t.num_attention_heads) * t.head_dim, kvd = int64_t(t.num_key_value_heads) * t.head_dim;
  const double lm_bytes = (bf16 ? 2.0 : 4.0) * (double(t.num_hidden_layers) * (double(t.hidden_size) * (2 * qd + 2 * kvd) +
                                                                 3.0 * t.hidden_size * t.intermediate_size) +
                                 double(t.vocab_size) * t.hidden_size);
  std::printf("\nprefill: %lld tokens (%lld image) in %.0f ms: %.1f tok/s\n", (long long)S, (long long)image_tokens,
              pre * 1e3, double(S) / pre);
  const int rounds = 4;
  std::vector<double> ratios;
  for (int r = 0; r < rounds; ++r) {
    const double bw = read_bandwidth();
    const int n = std::max(1, n_decode / rounds);
    auto t1 = Clock::now();
    for (int i = 0; i < n; ++i) s.decode(5);
    const double dec = secs(t1) / n;
    const double ctx = double(S) + 1 + r * n + n / 2.0;
    const double kv_bytes = 2.0 * 4.0 * t.num_hidden_layers * ctx * double(kvd);
    ratios.push_back((lm_bytes + kv_bytes) / dec / 1e9 / bw);
    std::printf("decode round %d: %.2f tok/s, %.1f GB/s (%.2f GB of %s weights + %.0f MB of KV cache per token), "
                "read bandwidth %.1f GB/s: %.0f%%\n",
                r + 1, 1.0 / dec, (lm_bytes + kv_bytes) / dec / 1e9, lm_bytes / 1e9, dtype.c_str(), kv_bytes / 1e6, bw,
                100.0 * ratios.back());
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("decode: median %.0f%% of the read bandwidth (rounds: %.0f%% .. %.0f%%)\n",
              50.0 * (ratios[rounds / 2 - 1] + ratios[rounds / 2]), 100.0 * ratios.front(), 100.0 * ratios.back());
}

}  // namespace iris::bench
