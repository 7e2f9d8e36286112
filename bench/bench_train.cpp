// Training throughput on the configuration the training issue measured PyTorch with (Hugging Face LLaVA on
// Debian's torch, 2 threads: 3.6 s per step, 289 tokens/s): CLIP 6 layers x 384 at 224 px / patch 16 (frozen) +
// Llama 8 layers x 512 (8 heads, 4 kv heads, MLP 1408, vocab 8000), batch 4 x 260 tokens (196 image tokens),
// AdamW on projector + LLM. Reports seconds per step, tokens/s and images/s for f32 and bf16 matrix products at
// 1 and 2 threads. Usage: bench_train [--steps N (3)]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "cpu/threads.h"
#include "models/vlm.h"
#include "train/optim.h"
#include "train/trainable.h"

using namespace iris;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  int steps = 3;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
  models::ModelConfig cfg;
  cfg.arch = models::Architecture::Llava;
  auto& v = cfg.llava.vision;
  v.hidden_size = 384, v.intermediate_size = 1536, v.num_hidden_layers = 6, v.num_attention_heads = 6;
  v.image_size = 224, v.patch_size = 16;
  auto& t = cfg.llava.text;
  t.vocab_size = 8000, t.hidden_size = 512, t.intermediate_size = 1408, t.num_hidden_layers = 8;
  t.num_attention_heads = 8, t.num_key_value_heads = 4, t.head_dim = 64, t.max_position_embeddings = 512;
  cfg.llava.image_token_index = 7999;
  cfg.llava.validate();
  const int B = 4, S = 260, n_img = int(cfg.llava.image_tokens_per_image());
  std::mt19937 g(1);
  std::vector<train::Example> batch(B);
  for (auto& ex : batch) {
    ex.ids.push_back(1);
    for (int i = 0; i < n_img; ++i) ex.ids.push_back(cfg.llava.image_token_index);
    while (int(ex.ids.size()) < S) ex.ids.push_back(int32_t(3 + g() % 7000));
    ex.labels.assign(ex.ids.size(), -100);
    for (int i = 1 + n_img + 20; i < S; ++i) ex.labels[size_t(i)] = ex.ids[size_t(i)];  // answer tokens
    std::vector<float> px(size_t(3 * 224 * 224));
    for (auto& p : px) p = float(int(g() % 200) - 100) / 100.0f;
    ex.pixel_values.push_back(px);
  }
  std::printf("batch %d x %d tokens (%d image tokens), stage 2 full (projector + LLM), AdamW\n", B, S, n_img);
  std::printf("| precision | threads | s / step | tokens/s | images/s | vs PyTorch 289 tok/s |\n|---|---|---|---|---|---|\n");
  for (auto prec : {cpu::MatmulPrecision::F32, cpu::MatmulPrecision::BF16}) {
    for (int threads : {1, 2}) {
      cpu::set_num_threads(threads);
      auto m = models::Vlm::create(cfg, 1);
      train::TrainSpec spec = train::stage_spec(2);
      spec.precision = prec;
      train::TrainableVlm tv(*m, spec);
      train::OptimizerConfig oc;
      oc.lr = 1e-4;
      auto opt = train::Optimizer::create(oc);
      std::vector<train::ParamRef> refs;
      for (train::Param* p : tv.params())
        refs.push_back({p->name, p->value.data<float>(), p->grad.data<float>(), p->value.numel(), p->decay});
      int64_t n_sup = 0;
      for (auto& ex : batch) n_sup += train::supervised_count(ex);
      auto one_step = [&] {
        tv.zero_grad();
        for (auto& ex : batch) tv.forward_backward(ex, 1.0f / float(n_sup));
        opt->step(refs, 1e-4);
        tv.weights_updated();
      };
      one_step();  // warm up (primitive creation, first-touch)
      auto t0 = Clock::now();
      for (int s = 0; s < steps; ++s) one_step();
      double sec = std::chrono::duration<double>(Clock::now() - t0).count() / steps;
      std::printf("| %s | %d | %.3f | %.0f | %.1f | %.1fx |\n", prec == cpu::MatmulPrecision::BF16 ? "bf16" : "f32",
                  threads, sec, B * S / sec, B / sec, B * S / sec / 289.0);
      std::fflush(stdout);
    }
  }
  return 0;
}
