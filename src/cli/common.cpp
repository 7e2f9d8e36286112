// Flag definitions shared by the subcommands.
#include "cli/common.h"

#include <cstdlib>
#include <filesystem>

#include "cpu/threads.h"
#include "train/lora.h"

namespace iris::cli {

namespace fs = std::filesystem;

std::string builtin_model_dir() {
  std::error_code ec;
  if (const char* env = std::getenv("IRIS_MODEL"); env && *env) {
    IRIS_CHECK(fs::exists(fs::path(env) / "config.json", ec), "IRIS_MODEL=", env,
               " is not a model folder (no config.json there)");
    return env;
  }
  std::vector<fs::path> tried;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path bin = exe.parent_path();
    tried.push_back(bin / ".." / "share" / "iris" / kBuiltinModelName);  // installed: PREFIX/bin, PREFIX/share/iris
    tried.push_back(bin / ".." / ".." / "models" / kBuiltinModelName);   // build tree: REPO/build/bin
  }
  std::string list;
  for (const fs::path& p : tried) {
    if (fs::exists(p / "config.json", ec)) return p.lexically_normal().string();
    list += "\n  " + p.lexically_normal().string();
  }
  throw Error(str_cat("no -m/--model given and the built-in model (", kBuiltinModelName,
                      ") was not found; looked in:", list, "\nset IRIS_MODEL or pass -m DIR"));
}

void ModelFlags::add(CLI::App& app) {
  app.add_option("-m,--model", model,
                 "model folder (Hugging Face layout: config.json, *.safetensors, tokenizer.json); default: the "
                 "built-in model (models/iris-shapes, or $IRIS_MODEL)");
  app.add_option("--dtype", dtype, "matrix-product precision: auto (f32 for f32 checkpoints, else bf16), f32, bf16")
      ->check(CLI::IsMember({"auto", "f32", "bf16"}));
  app.add_option("-t,--threads", threads, "threads (default: all cores)");
  app.add_option("-c,--ctx-size", ctx, "context length in tokens (default: the model's, at most 4096)");
  app.add_option("--image-pad", image_pad, "none: resize + center crop; square: pad to a square with the mean colour first (original LLaVA-1.5)")
      ->check(CLI::IsMember({"none", "square"}));
  app.add_option("--min-pixels", min_pixels, "Qwen2-VL: fewest pixels an image is resized to (default: the folder's)");
  app.add_option("--max-pixels", max_pixels, "Qwen2-VL: most pixels an image is resized to, bounding its tokens (default: the folder's)");
  app.add_option("--max-tiles", max_tiles,
                 "Idefics3 / SmolVLM: most tiles an image is cut into (1: the image whole; default: the folder's "
                 "longest edge)");
  app.add_option("--max-image-pixels", max_image_pixels, "refuse images with more pixels than this (checked before decoding)");
  app.add_flag("--no-exif", no_exif, "ignore EXIF orientation");
  app.add_option("--lora", lora, "LoRA adapter folder as PEFT writes it (adapter_config.json + adapter_model.safetensors)");
}

const std::string& ModelFlags::resolve() {
  if (model.empty()) model = builtin_model_dir();
  return model;
}

runtime::EngineOptions ModelFlags::engine_options() const {
  runtime::EngineOptions o;
  o.load.precision = dtype == "f32" ? models::WeightPrecision::F32
                     : dtype == "bf16" ? models::WeightPrecision::BF16
                                       : models::WeightPrecision::Auto;
  o.n_ctx = ctx;
  o.process.pad_to_square = image_pad == "square";
  o.process.min_pixels = min_pixels;
  o.process.max_pixels = max_pixels;
  IRIS_CHECK(min_pixels >= 0 && max_pixels >= 0 && (min_pixels == 0 || max_pixels == 0 || min_pixels <= max_pixels),
             "--min-pixels ", min_pixels, " and --max-pixels ", max_pixels, ": expected 0 <= min <= max");
  IRIS_CHECK(max_tiles >= 0, "--max-tiles must be >= 1");
  o.process.max_tiles = max_tiles;
  o.decode.max_pixels = max_image_pixels;
  o.decode.apply_exif_orientation = !no_exif;
  if (!lora.empty()) {
    std::string dir = lora;
    o.on_model_loaded = [dir](models::Vlm& m) { train::apply_lora_adapter(m, dir); };
  }
  return o;
}

void ModelFlags::apply_threads() const { cpu::set_num_threads(threads); }

text::SamplingParams SamplingFlags::resolve(const text::SamplingParams& defaults) const {
  text::SamplingParams r = defaults;
  r.seed = p.seed;
  if (temp_ && temp_->count()) r.temperature = p.temperature;
  if (top_k_ && top_k_->count()) r.top_k = p.top_k;
  if (top_p_ && top_p_->count()) r.top_p = p.top_p;
  if (min_p_ && min_p_->count()) r.min_p = p.min_p;
  if (penalty_ && penalty_->count()) r.repetition_penalty = p.repetition_penalty;
  if (last_n_ && last_n_->count()) r.repeat_last_n = p.repeat_last_n;
  return r;
}

void SamplingFlags::add(CLI::App& app) {
  temp_ = app.add_option("--temp", p.temperature,
                         "temperature; 0 = greedy (default: the model folder's generation_config.json, else 0 as "
                         "Hugging Face's generate)");
  top_k_ = app.add_option("--top-k", p.top_k, "top-k sampling (0 = off)");
  top_p_ = app.add_option("--top-p", p.top_p, "top-p sampling (1 = off)");
  min_p_ = app.add_option("--min-p", p.min_p, "min-p sampling (0 = off)");
  penalty_ = app.add_option("--repeat-penalty", p.repetition_penalty, "repetition penalty (1 = off)");
  last_n_ = app.add_option("--repeat-last-n", p.repeat_last_n,
                           "tokens considered by the repetition penalty (-1 = all)");
  app.add_option("-s,--seed", p.seed, "random seed");
}

}  // namespace iris::cli
