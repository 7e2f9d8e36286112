// Speed of the op kernels on the shapes of real models, printed, never pass/fail: these tests are DISABLED_
// so ctest skips them. Run with
//   build/tests/test_ops --gtest_also_run_disabled_tests --gtest_filter='OpsBench*'
// Each measurement is the best of several runs, on 1 thread and on all threads.
#include <gtest/gtest.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "cpu/threads.h"
#include "ops/activations.h"
#include "ops/attention.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "ops/softmax.h"
#include "ops_test_util.h"

namespace iris::ops {
namespace {

using test::VecFl;

double process_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

struct Timing {
  double wall;  // best wall time of one call, seconds
  double cpu;   // process CPU time of that call (all threads), seconds
};

// Best of several calls after one warm-up, repeating until ~0.5 s has passed (at least 3 calls). The machine
// may be shared: CPU time shows the speed while running, wall time what a caller waited.
Timing best_time(const std::function<void()>& fn) {
  fn();
  Timing best{1e30, 1e30};
  double total = 0;
  for (int i = 0; i < 3 || (total < 0.5 && i < 2000); ++i) {
    const double c0 = process_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double c = process_cpu_seconds() - c0;
    best.wall = std::min(best.wall, w);
    best.cpu = std::min(best.cpu, c);
    total += w;
  }
  return best;
}

std::vector<int> thread_counts() {
  std::vector<int> t = {1};
  if (cpu::num_threads() > 1) t.push_back(cpu::num_threads());
  return t;
}

// Prints, for 1 thread and all threads, the best wall time and rate (`work` units of `unit` per call), and the
// rate per busy core (work / CPU seconds: what each thread achieves while it runs; includes OpenMP spinning).
void report(const std::string& name, double work, const char* unit, const std::function<void()>& fn) {
  const int saved = cpu::num_threads();
  for (int t : thread_counts()) {
    cpu::set_num_threads(t);
    const Timing b = best_time(fn);
    std::printf("%-62s %d thr %9.3f ms %8.2f %s | per busy core %8.2f\n", name.c_str(), t, b.wall * 1e3,
                work / b.wall * 1e-9, unit, work / b.cpu * 1e-9);
  }
  cpu::set_num_threads(saved);
}

VecFl rnd(int64_t n, uint64_t seed) { return test::to_f(test::random_vec(test::sz(n), seed)); }

void bench_attention(const char* what, int64_t Tq, int64_t Tk, int64_t H, int64_t KV, int64_t hd, bool causal,
                     int64_t q_offset, bool backward) {
  VecFl q = rnd(Tq * H * hd, 1), k = rnd(Tk * KV * hd, 2), v = rnd(Tk * KV * hd, 3), out(test::sz(Tq * H * hd));
  VecFl lse(test::sz(H * Tq)), dout = rnd(Tq * H * hd, 4), dq(q.size()), dk(k.size()), dv(v.size());
  const float scale = 1.0f / std::sqrt(float(hd));
  // Visible (query, key) pairs: 2 FLOPs per pair and head dim in each of the two products.
  double pairs = 0;
  for (int64_t i = 0; i < Tq; ++i) pairs += double(causal ? std::min(q_offset + i + 1, Tk) : Tk);
  const double flops = 4.0 * pairs * double(hd) * double(H);
  char name[160];
  std::snprintf(name, sizeof name, "attention %s fwd Tq=%lld Tk=%lld H=%lld/%lld hd=%lld%s", what, (long long)Tq,
                (long long)Tk, (long long)H, (long long)KV, (long long)hd, causal ? " causal" : "");
  report(name, flops, "GFLOP/s", [&] {
    attention_forward(q.data(), H * hd, k.data(), KV * hd, v.data(), KV * hd, out.data(), H * hd, Tq, Tk, H, KV, hd,
                      scale, causal, q_offset, lse.data());
  });
  if (!backward) return;
  attention_forward(q.data(), H * hd, k.data(), KV * hd, v.data(), KV * hd, out.data(), H * hd, Tq, Tk, H, KV, hd, scale,
                    causal, q_offset, lse.data());
  std::snprintf(name, sizeof name, "attention %s bwd Tq=%lld Tk=%lld H=%lld/%lld hd=%lld%s", what, (long long)Tq,
                (long long)Tk, (long long)H, (long long)KV, (long long)hd, causal ? " causal" : "");
  // The backward does 5 products of the forward's size (S and dP recomputed, then dV, dK, dQ).
  report(name, 2.5 * flops, "GFLOP/s", [&] {
    attention_backward(q.data(), H * hd, k.data(), KV * hd, v.data(), KV * hd, out.data(), H * hd, lse.data(),
                       dout.data(), H * hd, dq.data(), H * hd, dk.data(), KV * hd, dv.data(), KV * hd, Tq, Tk, H, KV,
                       hd, scale, causal, q_offset);
  });
}

TEST(OpsBench, DISABLED_Attention) {
  bench_attention("CLIP-L/336 prefill", 577, 577, 16, 16, 64, false, 0, true);
  bench_attention("Llama decode GQA", 1, 4096, 32, 8, 128, true, 4095, false);
  bench_attention("Llama-2-7B decode", 1, 4096, 32, 32, 128, true, 4095, false);
  bench_attention("Llama-2-7B decode", 1, 1024, 32, 32, 128, true, 1023, false);
  bench_attention("Llama-2-7B prefill", 640, 640, 32, 32, 128, true, 0, true);
}

TEST(OpsBench, DISABLED_Elementwise) {
  const int64_t rows = 577, dim = 1024, ff = 4096;
  VecFl x = rnd(rows * dim, 1), w = rnd(dim, 2), b = rnd(dim, 3), y(x.size()), mean(test::sz(rows)), rstd(mean.size());
  VecFl dy = rnd(rows * dim, 4), dx(x.size()), dw(test::sz(dim)), db(test::sz(dim));
  const double bytes = double(rows * dim) * 4.0;
  report("layernorm fwd 577x1024 (GB/s of x)", bytes, "GB/s",
         [&] { layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, dim, 1e-5f); });
  report("layernorm bwd 577x1024 (GB/s of x)", bytes, "GB/s", [&] {
    layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(), db.data(), rows,
                       dim);
  });
  report("rmsnorm fwd 577x1024 (GB/s of x)", bytes, "GB/s",
         [&] { rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-5f); });
  VecFl h = rnd(rows * ff, 5), h2(h.size()), dh = rnd(rows * ff, 6);
  const double n = double(rows * ff);
  for (Activation a : {Activation::Gelu, Activation::GeluTanh, Activation::QuickGelu, Activation::Silu}) {
    report(std::string(activation_name(a)) + " fwd 577x4096 (Gelem/s)", n, "Gelem/s",
           [&] { activation_forward(a, h.data(), h2.data(), rows * ff); });
    report(std::string(activation_name(a)) + " bwd 577x4096 (Gelem/s)", n, "Gelem/s",
           [&] { activation_backward(a, h.data(), dh.data(), h2.data(), rows * ff); });
  }
  report("swiglu fwd 577x4096 (Gelem/s)", n, "Gelem/s", [&] { swiglu_forward(h.data(), dh.data(), h2.data(), rows * ff); });
  VecFl s = rnd(16 * 577 * 577, 7), s2(s.size());
  report("softmax fwd 16*577 x 577 (Gelem/s)", double(s.size()), "Gelem/s",
         [&] { softmax_forward(s.data(), s2.data(), 16 * 577, 577); });
  const int64_t T = 512, vocab = 32000;
  VecFl logits = rnd(T * vocab, 8), dl(logits.size());
  std::vector<int32_t> targets(test::sz(T));
  for (int64_t i = 0; i < T; ++i) targets[test::sz(i)] = int32_t((i * 7919) % vocab);
  report("cross-entropy fwd+bwd 512x32000 (Gelem/s)", double(T * vocab), "Gelem/s", [&] {
    cross_entropy_forward_backward(logits.data(), targets.data(), T, vocab, nullptr, dl.data(), 1.0f / float(T));
  });
  VecFl qk = rnd(T * 32 * 128, 9);
  std::vector<int64_t> pos(test::sz(T));
  for (int64_t i = 0; i < T; ++i) pos[test::sz(i)] = i;
  VecFl inv(64);
  rope_default_inv_freq(10000.0f, 128, inv.data());
  report("rope fwd 512 tok x 32 heads x 128 (Gelem/s)", double(qk.size()), "Gelem/s",
         [&] { rope_forward(qk.data(), 32 * 128, pos.data(), inv.data(), T, 32, 128, 128); });
}

}  // namespace
}  // namespace iris::ops
