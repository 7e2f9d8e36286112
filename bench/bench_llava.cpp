// End-to-end LLaVA-1.5 speed at real scale: makes a model with random weights (CLIP ViT-L/14-336 + a ~0.5B Llama,
// preset llava-1.5-0.5b), saves it as a Hugging Face folder, loads it back like any checkpoint, and reports
// image-encode ms, prefill tokens/s and decode tokens/s for f32 and bf16 matrix products at 1 and 2 threads.
// Also reports the encoder's matrix-product FLOP rate and the decode weight bandwidth.
// Usage: bench_llava [--dir DIR (default bench-model)] [--prompt N (text tokens after the image, 64)] [--decode N (32)]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "bench_util.h"
#include "cpu/threads.h"
#include "models/presets.h"
#include "runtime/session.h"

using namespace iris;
namespace fs = std::filesystem;
using bench::Clock;

using bench::read_bandwidth;
using bench::secs;

int main(int argc, char** argv) {
  std::string dir = "bench-model";
  int n_text = 64, n_decode = 32;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--prompt")) n_text = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--decode")) n_decode = std::atoi(argv[i + 1]);
  }
  models::ModelConfig cfg = models::preset("llava-1.5-0.5b");
  if (!fs::exists(fs::path(dir) / "model.safetensors")) {
    std::printf("creating %s ...\n", dir.c_str());
    auto t0 = Clock::now();
    auto m = models::Vlm::create(cfg, 1);
    models::Vlm::save_folder(dir, cfg, m->created_weights(), DType::F32);
    std::printf("created in %.1f s\n", secs(t0));
  }
  const auto& v = cfg.llava.vision;
  const auto& t = cfg.llava.text;
  // Matrix-product FLOPs of one image encode (the layers LLaVA runs: feature layer -2) and weight bytes per token.
  const int64_t T = v.num_positions(), D = v.hidden_size, I = v.intermediate_size;
  const int layers = cfg.llava.feature_layer_index();
  double vit_flops = double(layers) * 2.0 * double(T) * (4.0 * D * D + 2.0 * D * I) +
                     double(layers) * 4.0 * double(T) * double(T) * D + 2.0 * double(T - 1) * 3 * 14 * 14 * D;
  const int64_t qd = int64_t(t.num_attention_heads) * t.head_dim, kvd = int64_t(t.num_key_value_heads) * t.head_dim;
  double lm_params = double(t.num_hidden_layers) * (double(t.hidden_size) * (2 * qd + 2 * kvd) +
                                                    3.0 * t.hidden_size * t.intermediate_size) +
                     double(t.vocab_size) * t.hidden_size;
  std::printf("vision: %d of %d layers x %lld, %lld tokens, %.1f GFLOP per image; LM: %.0fM matmul params\n", layers,
              v.num_hidden_layers, (long long)D, (long long)T, vit_flops / 1e9, lm_params / 1e6);
  double bw[3] = {0, 0, 0};
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    bw[threads] = read_bandwidth();
    std::printf("memory read bandwidth, %d thread%s: %.1f GB/s\n", threads, threads > 1 ? "s" : "", bw[threads]);
  }
  std::printf("| dtype | threads | image encode ms | encode GFLOP/s | prefill tok/s (%d tok) | decode tok/s | decode GB/s | of read bandwidth |\n",
              int(cfg.llava.image_tokens_per_image()) + n_text);
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (auto prec : {models::WeightPrecision::F32, models::WeightPrecision::BF16}) {
    auto m = models::Vlm::load(dir, {prec});
    for (int threads : {1, 2}) {
      cpu::set_num_threads(threads);
      models::ImagePixels px;
      px.values = Tensor::from_vector(std::vector<float>(size_t(3 * v.image_size * v.image_size), 0.1f),
                                      {3, v.image_size, v.image_size});
      m->encode_image(px);  // warm up
      double enc = 1e30;
      models::ImageFeatures e;
      for (int r = 0; r < 2; ++r) {
        auto t0 = Clock::now();
        e = m->encode_image(px);
        enc = std::min(enc, secs(t0));
      }
      std::vector<int32_t> ids{1};
      for (int64_t i = 0; i < e.n_tokens(); ++i) ids.push_back(m->image_token_id());
      for (int i = 0; i < n_text; ++i) ids.push_back(100 + i);
      models::PromptInput in = m->prepare_prompt(ids, {e});
      runtime::Session s(*m, int64_t(ids.size()) + n_decode + 1);
      models::PromptInput warm{in.embeddings.slice(0, 0, 16).contiguous(), models::Positions::range(0, 16), 16};
      s.prefill(warm);  // warm up
      s.reset();
      auto t0 = Clock::now();
      std::vector<float> logits = s.prefill(in);
      double pre = secs(t0);
      int32_t tok = 5;
      s.decode(tok);  // warm up the M = 1 primitives
      auto t1 = Clock::now();
      for (int i = 0; i < n_decode; ++i) s.decode(tok);
      double dec = secs(t1) / n_decode;
      double bytes = lm_params * (prec == models::WeightPrecision::BF16 ? 2 : 4);
      std::printf("| %s | %d | %.0f | %.0f | %.1f | %.2f | %.1f | %.0f%% |\n",
                  prec == models::WeightPrecision::BF16 ? "bf16" : "f32", threads, enc * 1e3, vit_flops / enc / 1e9,
                  double(ids.size()) / pre, 1.0 / dec, bytes / dec / 1e9, 100.0 * bytes / dec / 1e9 / bw[threads]);
      std::fflush(stdout);
    }
  }
  return 0;
}
