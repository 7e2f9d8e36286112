// iris merge-lora: folds a PEFT LoRA adapter into its base model's weights (W += scale * B A) and writes the merged
// model as a Hugging Face folder that any tool loads without the adapter.
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "io/file.h"
#include "train/lora.h"

namespace iris::cli {

Runner add_merge_lora(CLI::App& app) {
  struct Opts {
    std::string model, lora, out, dtype = "f32";
  };
  auto o = std::make_shared<Opts>();
  app.add_option("-m,--model", o->model, "base model folder")->required();
  app.add_option("--lora", o->lora, "adapter folder (adapter_config.json + adapter_model.safetensors)")->required();
  app.add_option("--out", o->out, "output folder")->required();
  app.add_option("--dtype", o->dtype, "stored dtype of the merged weights: f32, bf16, f16")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  return [o] {
    namespace fs = std::filesystem;
    auto model = models::Vlm::load(o->model, {models::WeightPrecision::F32, /*full_vision_tower=*/true});
    train::apply_lora_adapter(*model, o->lora);
    int n = train::merge_lora(*model);
    DType dt = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
    models::Vlm::save_folder(o->out, model->config(), model->state(), dt);
    models::Vlm::copy_side_files(o->model, o->out);
    std::fprintf(stderr, "merged %d adapted layers into %s\n", n, o->out.c_str());
    return 0;
  };
}

}  // namespace iris::cli
