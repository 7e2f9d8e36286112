// Shared pieces of the iris subcommands: model/sampling flags in llama.cpp's spelling, and their registration.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/engine.h"

namespace iris::cli {

// The model shipped with iris (trained by scripts/train-builtin.sh), used when no -m is given.
inline constexpr const char* kBuiltinModelName = "iris-shapes";
// Its folder: $IRIS_MODEL when set (an error if it is not a model folder), else PREFIX/share/iris/iris-shapes
// next to an installed binary, else models/iris-shapes of the source tree the binary was built in (build/bin).
// Throws iris::Error listing where it looked.
std::string builtin_model_dir();

struct ModelFlags {
  std::string model;  // "" until resolve(): the built-in model
  std::string dtype = "auto";
  int threads = 0;
  int64_t ctx = 0;
  std::string image_pad = "none";
  int64_t min_pixels = 0, max_pixels = 0;  // Qwen2-VL's pixel budget per image (0: the folder's)
  int64_t max_tiles = 0;                   // Idefics3 / SmolVLM: most tiles per image (0: the folder's)
  int64_t max_image_pixels = 50'000'000;
  bool no_exif = false;
  std::string lora;  // PEFT adapter folder applied after loading

  void add(CLI::App& app);
  const std::string& resolve();  // fills model with the built-in model's folder when -m was not given
  runtime::EngineOptions engine_options() const;
  void apply_threads() const;
};

struct SamplingFlags {
  text::SamplingParams p;
  void add(CLI::App& app);
  // The sampling settings: the model folder's generation_config.json defaults (Engine::generation_defaults),
  // with every flag the user gave on top.
  text::SamplingParams resolve(const text::SamplingParams& defaults) const;

 private:
  CLI::Option *temp_ = nullptr, *top_k_ = nullptr, *top_p_ = nullptr, *min_p_ = nullptr, *penalty_ = nullptr,
              *last_n_ = nullptr;
};

// Each subcommand registers itself and returns the function that runs it.
using Runner = std::function<int()>;
Runner add_run(CLI::App& app);
Runner add_forward(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_init(CLI::App& app);
Runner add_data(CLI::App& app);
Runner add_eval(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_train(CLI::App& app);
Runner add_merge_lora(CLI::App& app);

}  // namespace iris::cli
