// SmolVLM speed at real scale: creates (once) a model with the shapes of SmolVLM-256M-Instruct and random weights
// (preset smolvlm-256m: SigLIP base patch-16 at 512 px, pixel shuffle by 4, SmolLM2-135M), saves it as a bf16
// Hugging Face folder, loads it like any checkpoint and reports, on the threads given:
//   - image encode (processor + tower + connector) of photos cut with --max-tiles 1, 4 and 12 into 1, 4 + 1
//     and 12 + 1 frames of 512 px (tiles and the global view), ms per photo and per frame, and the tower's matrix products timed alone at a
//     frame's row count (1024 patches) against the bf16 matmul throughput measured in the same run;
//   - prefill tok/s (the 13-frame photo: 832 image tokens + 64 text) and decode tok/s against the read bandwidth.
// Usage: bench_smolvlm [--dir DIR (default bench-smolvlm)] [-t THREADS (2)] [--decode N (32)]
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "bench_vlm.h"
#include "models/presets.h"

using namespace iris;
namespace fs = std::filesystem;
using bench::Clock;
using bench::matmul_gflops;
using bench::matmul_seconds;
using bench::secs;
using bench::test_image;

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string dir = "bench-smolvlm";
  int threads = 2, n_decode = 32;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "-t")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--decode")) n_decode = std::atoi(argv[i + 1]);
  }
  cpu::set_num_threads(threads);
  models::ModelConfig cfg = models::preset("smolvlm-256m");
  if (!fs::exists(fs::path(dir) / "model.safetensors")) {
    std::printf("creating %s (smolvlm-256m, bf16) ...\n", dir.c_str());
    auto m = models::Vlm::create(cfg, 1);
    models::Vlm::save_folder(dir, cfg, m->created_weights(), DType::BF16);
  }
  auto m = models::Vlm::load(dir, {models::WeightPrecision::BF16});
  const cpu::MatmulPrecision prec = cpu::MatmulPrecision::BF16;
  const models::SiglipVisionConfig& v = cfg.idefics3.vision;
  const int64_t D = v.hidden_size, I = v.intermediate_size, P = int64_t(v.num_channels) * v.patch_size * v.patch_size;
  const int64_t N = int64_t(v.grid()) * v.grid(), s = cfg.idefics3.scale_factor, T = cfg.idefics3.text.hidden_size;
  std::printf("smolvlm-256m, %d threads, bf16 products (%s); vision %d layers x %lld (MLP %lld), %lld patches per "
              "frame, %lld image tokens per frame\n",
              threads, cpu::bf16_path() == cpu::Bf16Path::Native ? "oneDNN" : "widened to f32 panels", v.num_hidden_layers,
              (long long)D, (long long)I, (long long)N, (long long)cfg.idefics3.image_seq_len());
  const double peak = matmul_gflops(N, I, D, prec);
  std::printf("bf16 matmul, same run, tower MLP shape %lldx%lldx%lld: %.0f GFLOP/s\n", (long long)N, (long long)I,
              (long long)D, peak);
  // One frame's matrix products: patch embedding, q/k/v/out and the MLP of every layer, the connector.
  const double frame_flops = 2.0 * N * (double(P) * D + v.num_hidden_layers * (4.0 * D * D + 2.0 * D * I)) +
                             2.0 * double(N / (s * s)) * (double(D) * s * s * T);
  const double frame_mm = matmul_seconds(N, D, P, prec, 3) +
                          v.num_hidden_layers * (4 * matmul_seconds(N, D, D, prec, 3) +
                                                 matmul_seconds(N, I, D, prec, 3) + matmul_seconds(N, D, I, prec, 3)) +
                          matmul_seconds(N / (s * s), T, D * s * s, prec, 3);
  std::printf("one frame's matrix products alone: %.0f ms, %.0f GFLOP/s, %.0f%% of the bf16 matmul\n", frame_mm * 1e3,
              frame_flops / frame_mm / 1e9, 100.0 * frame_flops / frame_mm / 1e9 / peak);

  // Photos cut into 1, 4 and 12 tiles of 512 px, through the model's processor with --max-tiles.
  struct Case { int w, h; int64_t max_tiles; };
  const Case cases[] = {{640, 480, 1}, {1280, 1280, 4}, {2048, 1536, 12}};
  std::printf("\n| photo | max tiles | tiles | frames | image tokens | encode ms | ms per frame | of which matrix "
              "products |\n|---|---|---|---|---|---|---|---|\n");
  models::ImageFeatures keep;
  for (const Case& c : cases) {
    models::ProcessOptions o;
    o.max_tiles = c.max_tiles;
    const vision::Image img = test_image(c.w, c.h);
    auto t0 = Clock::now();
    models::ImagePixels px = m->processor().process(img, o);
    models::ImageFeatures feat = m->encode_image(px);
    const double sec = secs(t0);
    const int64_t frames = px.values.dim(0);
    std::printf("| %dx%d | %lld | %lld | %lld | %lld | %.0f | %.0f | %.0f%% |\n", c.w, c.h, (long long)c.max_tiles,
                (long long)(px.grid_h * px.grid_w), (long long)frames, (long long)feat.n_tokens(), sec * 1e3,
                sec * 1e3 / double(frames), 100.0 * frame_mm * double(frames) / sec);
    keep = feat;
  }

  // Prefill with the 13-frame photo, then decode.
  std::vector<int32_t> ids{1, 100, 101};
  for (int64_t i = 0; i < keep.n_tokens(); ++i) ids.push_back(cfg.idefics3.image_token_id);
  for (int i = 0; i < 64; ++i) ids.push_back(1000 + i);
  models::PromptInput in = m->prepare_prompt(ids, {keep});
  bench::prefill_and_decode(*m, in, keep.n_tokens(), n_decode, true, "bf16");
  return 0;
}
