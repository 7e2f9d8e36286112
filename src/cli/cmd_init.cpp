// iris init-model: writes a Hugging Face model folder with freshly initialised (random) weights, from a preset or
// a config.json, with a real tokenizer copied in. Used for the README's demo model, tests and benchmarks.
#include <cstdio>

#include "cli/common.h"
#include "io/file.h"
#include "models/presets.h"

namespace iris::cli {


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
    models::ModelConfig cfg = o->config.empty() ? models::preset(o->preset) : models::ModelConfig::from_file(o->config);
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
