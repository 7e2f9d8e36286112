// Qwen2-VL speed at real scale: creates (once) a model with the shapes of Qwen2-VL-2B-Instruct and random weights
// (preset qwen2-vl-2b), saves it as a bf16 Hugging Face folder, loads it back like any checkpoint (bf16 matrix
// products) and reports, on the threads given:
//   - image encode (processor + vision tower + merger) for a 448x448, a 1024x768 and a 1920x1080 image at the
//     folder's max_pixels: patches, image tokens, ms and the encoder's matrix-product GFLOP/s, against the bf16
//     matmul throughput measured in the same run on the tower's own shapes;
//   - image tokens and encode ms of the 1920x1080 image against max_pixels;
//   - prefill tok/s (one 1024x768 image + 64 text tokens) and decode tok/s with the weight bandwidth it implies,
//     against the memory read bandwidth measured in the same run.
// Usage: bench_qwen2_vl [--dir DIR (default bench-qwen2-vl)] [-t THREADS (2)] [--decode N (32)] [--preset P]
//                       [--dtype bf16|f32 (matrix-product precision, default bf16)] [--text-only 1 (skip the
//                       image tables; prefill with a 448x448 image)]
// A CPU without native bf16 dot products (AVX512_BF16 / AMX) runs oneDNN's bf16 products emulated, several times
// slower than f32: the program says which it found.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "bench_vlm.h"
#include "cpu/threads.h"
#include "models/presets.h"
#include "runtime/session.h"
#include "vision/image.h"

using namespace iris;
namespace fs = std::filesystem;
using bench::Clock;

using bench::matmul_gflops;
using bench::matmul_seconds;
using bench::test_image;
using bench::secs;

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come, also into a file
  std::string dir = "bench-qwen2-vl", preset = "qwen2-vl-2b", dtype = "bf16";
  int threads = 2, n_decode = 32, n_text = 64, text_only = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "-t")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--decode")) n_decode = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--preset")) preset = argv[i + 1];
    else if (!std::strcmp(argv[i], "--dtype")) dtype = argv[i + 1];
    else if (!std::strcmp(argv[i], "--text-only")) text_only = std::atoi(argv[i + 1]);
  }
  cpu::set_num_threads(threads);
  models::ModelConfig cfg = models::preset(preset);
  if (!fs::exists(fs::path(dir) / "model.safetensors")) {
    std::printf("creating %s (%s, bf16) ...\n", dir.c_str(), preset.c_str());
    auto t0 = Clock::now();
    auto m = models::Vlm::create(cfg, 1);
    models::Vlm::save_folder(dir, cfg, m->created_weights(), DType::BF16);
    std::printf("created in %.1f s\n", secs(t0));
  }
  const bool bf16 = dtype == "bf16";
  const cpu::MatmulPrecision prec = bf16 ? cpu::MatmulPrecision::BF16 : cpu::MatmulPrecision::F32;
  auto m = models::Vlm::load(dir, {bf16 ? models::WeightPrecision::BF16 : models::WeightPrecision::F32});
  bool native_bf16 = false;
  {
    std::FILE* f = std::fopen("/proc/cpuinfo", "r");
    char line[4096];
    while (f && std::fgets(line, sizeof line, f))
      if (std::strstr(line, "avx512_bf16") || std::strstr(line, "amx_bf16")) native_bf16 = true;
    if (f) std::fclose(f);
  }
  std::printf("matrix products in %s; this CPU %s native bf16 dot products\n", dtype.c_str(),
              native_bf16 ? "has" : "has NO");
  const models::Qwen2VLVisionConfig& v = cfg.qwen2_vl.vision;
  const models::LlamaConfig& t = cfg.qwen2_vl.text;
  const int64_t D = v.embed_dim, I = v.intermediate, P = v.patch_dim(), H = int64_t(D) * 4;
  std::printf("%s, %d threads; vision %d blocks x %lld (MLP %lld%s), text %d layers x %d\n", preset.c_str(), threads,
              v.depth, (long long)D, (long long)I, v.v25 ? ", windows" : "", t.num_hidden_layers, t.hidden_size);

  // Matrix-product FLOPs of encoding an image of N patches: patch embedding, qkv, proj, MLP, merger.
  auto matmul_flops = [&](int64_t N) {
    const double mlp = v.v25 ? 3.0 * D * I : 2.0 * D * I;
    return 2.0 * N * (double(P) * D + v.depth * (4.0 * D * D + mlp)) + 2.0 * (N / 4) * (double(H) * H + double(H) * v.out_dim);
  };
  // The encoder's matrix products alone at N patches: the patch embedding, one block's products (timed once and
  // counted depth times: every block has the same shapes) and the merger's two, each with M = its row count.
  auto products_seconds = [&](int64_t N) {
    const int reps = N > 2000 ? 1 : 3;
    double t = matmul_seconds(N, D, P, prec, reps);
    double block = matmul_seconds(N, 3 * D, D, prec, reps) + matmul_seconds(N, D, D, prec, reps);
    if (v.v25)
      block += 2 * matmul_seconds(N, I, D, prec, reps) + matmul_seconds(N, D, I, prec, reps);
    else
      block += matmul_seconds(N, I, D, prec, reps) + matmul_seconds(N, D, I, prec, reps);
    t += v.depth * block;
    t += matmul_seconds(N / 4, H, H, prec, reps) + matmul_seconds(N / 4, v.out_dim, H, prec, reps);
    return t;
  };
  const double peak = matmul_gflops(1024, I, D, prec);
  std::printf("%s matmul, same run, tower MLP shape 1024x%lldx%lld: %.0f GFLOP/s\n", dtype.c_str(), (long long)I,
              (long long)D, peak);

  std::printf("\n| image | resized | patches | tokens | encode ms | matrix products ms | products GFLOP/s | of %s "
              "matmul | attention and the rest, ms |\n|---|---|---|---|---|---|---|---|---|\n",
              dtype.c_str());
  const int sizes[3][2] = {{448, 448}, {1024, 768}, {1920, 1080}};
  models::ImageFeatures keep;
  keep = m->encode_image(m->processor().process(test_image(448, 448)));  // warm up
  for (const auto& s : sizes) {
    if (text_only) break;
    vision::Image img = test_image(s[0], s[1]);
    auto t0 = Clock::now();
    models::ImagePixels px = m->processor().process(img);
    models::ImageFeatures f = m->encode_image(px);
    const double sec = secs(t0);
    const int64_t N = px.values.dim(0);
    const double mm = products_seconds(N);
    std::printf("| %dx%d | %lldx%lld | %lld | %lld | %.0f | %.0f | %.0f | %.0f%% | %.0f |\n", s[0], s[1],
                (long long)(px.grid_w * v.patch_size), (long long)(px.grid_h * v.patch_size), (long long)N,
                (long long)f.n_tokens(), sec * 1e3, mm * 1e3, matmul_flops(N) / mm / 1e9,
                100.0 * matmul_flops(N) / mm / 1e9 / peak, (sec - mm) * 1e3);
    if (s[0] == 1024) keep = f;
  }

  std::printf("\n1920x1080 against max_pixels:\n| max_pixels | resized | tokens | encode ms |\n|---|---|---|---|\n");
  for (int64_t mp : {int64_t(200704), int64_t(401408), int64_t(802816), int64_t(1003520), int64_t(1605632)}) {
    if (text_only) break;
    models::ProcessOptions o;
    o.max_pixels = mp;
    vision::Image img = test_image(1920, 1080);
    models::ImagePixels px = m->processor().process(img, o);
    auto t0 = Clock::now();
    models::ImageFeatures f = m->encode_image(px);
    std::printf("| %lld | %lldx%lld | %lld | %.0f |\n", (long long)mp, (long long)(px.grid_w * v.patch_size),
                (long long)(px.grid_h * v.patch_size), (long long)f.n_tokens(), secs(t0) * 1e3);
  }

  // Prefill and decode.
  const int32_t img_tok = m->image_token_id();
  std::vector<int32_t> ids{151644, 872, 198, cfg.qwen2_vl.vision_start_token_id};
  for (int64_t i = 0; i < keep.n_tokens(); ++i) ids.push_back(img_tok);
  ids.push_back(cfg.qwen2_vl.vision_end_token_id);
  for (int i = 0; i < n_text; ++i) ids.push_back(1000 + i);
  models::PromptInput in = m->prepare_prompt(ids, {keep});
  bench::prefill_and_decode(*m, in, keep.n_tokens(), n_decode, bf16, dtype);
  return 0;
}
