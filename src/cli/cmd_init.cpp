// iris init-model: writes a Hugging Face model folder with freshly initialised (random) weights, from a preset or
// a config.json, with a real tokenizer copied in. Used for the README's demo model, tests and benchmarks.
#include <cstdio>

#include "cli/common.h"
#include "io/file.h"

namespace iris::cli {

namespace {

models::ModelConfig preset(const std::string& name) {
  models::ModelConfig m;
  m.arch = models::Architecture::Llava;
  models::LlavaConfig& c = m.llava;
  models::ClipVisionConfig& v = c.vision;
  models::LlamaConfig& t = c.text;
  // LLaVA-1.5 conventions: 336 px / patch 14 CLIP, feature layer -2, MLP projector, image token 32000 in a
  // 32064-entry vocabulary over a 32000-token SentencePiece tokenizer.
  v.image_size = 336;
  v.patch_size = 14;
  v.hidden_act = "quick_gelu";
  t.vocab_size = 32064;
  t.max_position_embeddings = 4096;
  t.rms_norm_eps = 1e-5f;
  c.image_token_index = 32000;
  c.pad_token_id = 32001;
  if (name == "tiny-llava") {  // a few MB: the demo model until iris ships a trained one, and CLI tests
    v.hidden_size = 64, v.intermediate_size = 256, v.num_hidden_layers = 2, v.num_attention_heads = 4;
    t.hidden_size = 128, t.intermediate_size = 344, t.num_hidden_layers = 2, t.num_attention_heads = 4;
    t.num_key_value_heads = 2;
  } else if (name == "llava-1.5-0.5b") {  // real scale for benchmarks: CLIP ViT-L/14-336 + a ~0.5B Llama
    v.hidden_size = 1024, v.intermediate_size = 4096, v.num_hidden_layers = 24, v.num_attention_heads = 16;
    t.hidden_size = 1280, t.intermediate_size = 3456, t.num_hidden_layers = 24, t.num_attention_heads = 20;
    t.num_key_value_heads = 4;
  } else {
    throw Error(str_cat("unknown preset '", name, "' (known: tiny-llava, llava-1.5-0.5b)"));
  }
  t.head_dim = t.hidden_size / t.num_attention_heads;
  c.validate();
  return m;
}

}  // namespace

Runner add_init(CLI::App& app) {
  struct Opts {
    std::string preset = "tiny-llava", config, tokenizer, out, dtype = "f32";
    uint64_t seed = 0;
    float std = 0.02f;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--preset", o->preset, "tiny-llava or llava-1.5-0.5b (ignored with --config)");
  app.add_option("--config", o->config, "a config.json to initialise instead of a preset");
  app.add_option("--tokenizer", o->tokenizer, "folder with tokenizer.json (and tokenizer_config.json) to copy in");
  app.add_option("--out", o->out, "output folder")->required();
  app.add_option("--seed", o->seed, "random seed");
  app.add_option("--std", o->std, "standard deviation of the weights");
  app.add_option("--dtype", o->dtype, "stored dtype: f32, bf16, f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  return [o] {
    models::ModelConfig cfg = o->config.empty() ? preset(o->preset) : models::ModelConfig::from_file(o->config);
    auto m = models::Vlm::create(cfg, o->seed, o->std);
    DType dt = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
    models::Vlm::save_folder(o->out, cfg, m->created_weights(), dt, o->tokenizer);
    size_t n = 0;
    for (const auto& [name, t] : m->created_weights()) n += size_t(t.numel());
    std::fprintf(stderr, "wrote %s: %zu tensors, %.1fM parameters\n", o->out.c_str(), m->created_weights().size(),
                 double(n) / 1e6);
    return 0;
  };
}

}  // namespace iris::cli
