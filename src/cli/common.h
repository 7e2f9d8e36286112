// Shared pieces of the iris subcommands: model/sampling flags in llama.cpp's spelling, and their registration.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/engine.h"

namespace iris::cli {

struct ModelFlags {
  std::string model;
  std::string dtype = "auto";
  int threads = 0;
  int64_t ctx = 0;
  std::string image_pad = "none";
  int64_t max_image_pixels = 50'000'000;
  bool no_exif = false;
  std::string lora;  // PEFT adapter folder applied after loading

  void add(CLI::App& app);
  runtime::EngineOptions engine_options() const;
  void apply_threads() const;
};

struct SamplingFlags {
  text::SamplingParams p;
  void add(CLI::App& app);
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
