// iris init-model: writes a Hugging Face model folder with freshly initialised (random) weights, from a preset or
// a config.json, with a real tokenizer copied in. Used for the README's demo model, tests and benchmarks.
#include <cstdio>

#include "cli/common.h"
#include "io/file.h"
#include "models/presets.h"
#include "models/vit_clip.h"
#include "text/tokenizer.h"

namespace iris::cli {


Runner add_init(CLI::App& app) {
  struct Opts {
    std::string preset = "tiny-llava", config, tokenizer, out, dtype = "f32", vision_positions = "normal";
    uint64_t seed = 0;
    float std = 0.02f, vision_positions_scale = 1.0f;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--preset", o->preset, "tiny-llava, llava-1.5-0.5b, iris-shapes, qwen2-vl-tiny, qwen2-vl-2b, qwen2.5-vl-3b, smolvlm-tiny or smolvlm-256m (ignored with --config)");
  app.add_option("--config", o->config, "a config.json to initialise instead of a preset");
  app.add_option("--tokenizer", o->tokenizer, "folder with tokenizer.json (and tokenizer_config.json) to copy in");
  app.add_option("--out", o->out, "output folder")->required();
  app.add_option("--seed", o->seed, "random seed");
  app.add_option("--std", o->std, "standard deviation of the weights");
  app.add_option("--vision-positions", o->vision_positions,
                 "the vision tower's position embeddings: normal (random, like every other weight) or sincos (2-D "
                 "sine-cosine, as MAE; for a tower trained from scratch that must say where things are)")
      ->check(CLI::IsMember({"normal", "sincos"}));
  app.add_option("--vision-positions-scale", o->vision_positions_scale,
                 "sincos: multiply the table by this (default 1: values in [-1, 1])")
      ->check(CLI::PositiveNumber);
  app.add_option("--dtype", o->dtype, "stored dtype: f32, bf16, f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  return [o] {
    models::ModelConfig cfg = o->config.empty() ? models::preset(o->preset) : models::ModelConfig::from_file(o->config);
    if (!o->tokenizer.empty()) {  // a tokenizer that does not fit the model would make a folder that cannot run
      text::Tokenizer tok = text::Tokenizer::from_dir(o->tokenizer);
      const models::LlamaConfig& t = cfg.text();
      IRIS_CHECK(tok.vocab_size() <= t.vocab_size, "init-model: the tokenizer in ", o->tokenizer, " has ",
                 tok.vocab_size(), " tokens but the model's vocabulary is ", t.vocab_size);
      if (cfg.arch == models::Architecture::Llava) {
        auto img = tok.token_to_id("<image>");
        IRIS_CHECK(!img || *img == cfg.llava.image_token_index, "init-model: the tokenizer's <image> is id ", *img,
                   " but the model's image_token_index is ", cfg.llava.image_token_index);
      }
      if (cfg.arch == models::Architecture::Qwen2VL || cfg.arch == models::Architecture::Qwen2_5VL) {
        const models::Qwen2VLConfig& q = cfg.qwen2_vl;
        for (auto [name, id] : {std::pair<const char*, int>{"<|image_pad|>", q.image_token_id},
                                {"<|vision_start|>", q.vision_start_token_id},
                                {"<|vision_end|>", q.vision_end_token_id}}) {
          auto have = tok.token_to_id(name);
          IRIS_CHECK(have && *have == id, "init-model: the tokenizer in ", o->tokenizer, " has no ", name,
                     " with id ", id, " (the model's)");
        }
      }
      for (int e : t.eos_token_ids)
        IRIS_CHECK(e < tok.vocab_size() || tok.eos_ids().empty(), "init-model: eos_token_id ", e,
                   " is not a token of the tokenizer");
    }
    IRIS_CHECK(o->vision_positions == "sincos" || o->vision_positions_scale == 1.0f,
               "init-model: --vision-positions-scale needs --vision-positions sincos");
    IRIS_CHECK(o->vision_positions != "sincos" || cfg.arch == models::Architecture::Llava,
               "init-model: --vision-positions sincos needs a model with a vision tower");
    auto m = models::Vlm::create(cfg, o->seed, o->std);
    io::NamedTensors weights = m->created_weights();
    if (o->vision_positions == "sincos") {
      const std::string name = "vision_tower.vision_model.embeddings.position_embedding.weight";
      bool found = false;
      for (auto& [n, t] : weights)
        if (n == name) {  // the random values were still drawn: every other weight is the same as with "normal"
          t = models::sincos_positions_2d(cfg.llava.vision, o->vision_positions_scale);
          found = true;
        }
      IRIS_CHECK(found, "init-model: no tensor ", name);
    }
    DType dt = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
    models::Vlm::save_folder(o->out, cfg, weights, dt, o->tokenizer);
    size_t n = 0;
    for (const auto& [name, t] : weights) n += size_t(t.numel());
    std::fprintf(stderr, "wrote %s: %zu tensors, %.1fM parameters\n", o->out.c_str(), weights.size(),
                 double(n) / 1e6);
    return 0;
  };
}

}  // namespace iris::cli
