// Model registry and the LLaVA composite: vision tower -> feature layer -> select strategy -> projector, spliced
// into the token embeddings at the image-token positions.
#include "models/vlm.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "io/npy.h"

namespace iris::models {

namespace fs = std::filesystem;

namespace {

// Hugging Face moved LLaVA's weights between versions: <= 4.51 "language_model.model.*", "vision_tower.*",
// "multi_modal_projector.*", "language_model.lm_head.weight"; newer: "model.language_model.*",
// "model.vision_tower.*", "model.multi_modal_projector.*", "lm_head.weight".
struct LlavaNames {
  std::string text_body, head, vision, projector;
};

LlavaNames llava_names(const io::Checkpoint& c) {
  if (c.has("model.language_model.embed_tokens.weight"))
    return {"model.language_model.", "lm_head.weight", "model.vision_tower.vision_model.", "model.multi_modal_projector."};
  return {"language_model.model.", "language_model.lm_head.weight", "vision_tower.vision_model.", "multi_modal_projector."};
}

}  // namespace

nn::Tap env_dump_tap(const std::string& stage) {
  const char* dir = std::getenv("IRIS_DUMP_DIR");
  if (!dir || !*dir) return nullptr;
  std::string d = dir;
  fs::create_directories(d);
  return [d, stage](std::string_view name, int il, const float* data, int64_t rows, int64_t cols) {
    Tensor t = Tensor::empty({rows, cols});
    std::copy_n(data, rows * cols, t.data<float>());
    std::string file = str_cat(d, "/", stage, ".", name);
    if (il >= 0) file += str_cat(".", il);
    file += ".npy";
    io::save_npy(file, t);
  };
}

std::unique_ptr<Vlm> Vlm::load(const std::string& dir, const LoadOptions& opt) {
  IRIS_CHECK(fs::is_directory(dir), "model folder '", dir, "' does not exist or is not a folder");
  auto m = std::make_unique<Vlm>();
  m->cfg_ = ModelConfig::from_file((fs::path(dir) / "config.json").string());
  m->ckpt_ = io::Checkpoint::open(dir);
  switch (opt.precision) {
    case WeightPrecision::F32: m->precision_ = cpu::MatmulPrecision::F32; break;
    case WeightPrecision::BF16: m->precision_ = cpu::MatmulPrecision::BF16; break;
    case WeightPrecision::Auto: {
      bool all_f32 = true;
      for (const auto& n : m->ckpt_.names()) all_f32 &= m->ckpt_.info(n).dtype == DType::F32;
      m->precision_ = all_f32 ? cpu::MatmulPrecision::F32 : cpu::MatmulPrecision::BF16;
    }
  }
  WeightLoader w(m->ckpt_, m->precision_);
  try {
    m->build(w, opt.full_vision_tower);
  } catch (const Error& e) {
    throw Error(str_cat(dir, ": ", e.what()));
  }
  return m;
}

void Vlm::build(WeightLoader& w, bool full_vision_tower) {
  if (cfg_.arch == Architecture::Llava) {
    const LlavaConfig& c = cfg_.llava;
    LlavaNames names = w.creating() ? LlavaNames{"language_model.model.", "language_model.lm_head.weight",
                                                 "vision_tower.vision_model.", "multi_modal_projector."}
                                    : llava_names(ckpt_);
    int n_layers = full_vision_tower ? -1 : c.feature_layer_index();
    vision_.load(w, names.vision, c.vision, n_layers, full_vision_tower);
    projector_.load(w, names.projector, c.vision.hidden_size, c.text.hidden_size, c.projector_hidden_act,
                    c.projector_bias);
    text_.load(w, names.text_body, names.head, c.text);
  } else {
    text_.load(w, "model.", "lm_head.weight", cfg_.text());
  }
}

std::unique_ptr<Vlm> Vlm::create(const ModelConfig& cfg, uint64_t seed, float std) {
  auto m = std::make_unique<Vlm>();
  m->cfg_ = cfg;
  m->precision_ = cpu::MatmulPrecision::F32;
  WeightLoader w(seed, std, m->precision_);
  m->build(w, /*full_vision_tower=*/true);
  m->created_ = w.created();
  return m;
}

void Vlm::copy_side_files(const std::string& from_dir, const std::string& to_dir) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
                        "processor_config.json", "chat_template.json", "chat_template.jinja", "generation_config.json"}) {
    fs::path src = fs::path(from_dir) / f;
    if (fs::exists(src)) io::write_file_atomic((fs::path(to_dir) / f).string(), io::read_file(src.string()));
  }
}

void Vlm::save_folder(const std::string& dir, const ModelConfig& cfg, const io::NamedTensors& weights, DType dtype,
                      const std::string& tokenizer_dir) {
  fs::create_directories(dir);
  nlohmann::json j = cfg.arch == Architecture::Llava ? cfg.llava.to_json() : cfg.text().to_json();
  j["torch_dtype"] = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  io::write_file_atomic((fs::path(dir) / "config.json").string(), j.dump(2) + "\n");
  io::NamedTensors conv;
  conv.reserve(weights.size());
  for (const auto& [name, t] : weights) conv.emplace_back(name, t.dtype() == dtype ? t : t.to(dtype));
  io::save_safetensors((fs::path(dir) / "model.safetensors").string(), conv);
  if (!tokenizer_dir.empty()) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
      fs::path src = fs::path(tokenizer_dir) / f;
      if (fs::exists(src)) io::write_file_atomic((fs::path(dir) / f).string(), io::read_file(src.string()));
    }
  }
  if (cfg.arch == Architecture::Llava) {
    const int s = cfg.llava.vision.image_size;
    nlohmann::json p{{"image_processor_type", "CLIPImageProcessor"},
                     {"do_convert_rgb", true},
                     {"do_resize", true},
                     {"size", {{"shortest_edge", s}}},
                     {"resample", 3},
                     {"do_center_crop", true},
                     {"crop_size", {{"height", s}, {"width", s}}},
                     {"do_rescale", true},
                     {"rescale_factor", 1.0 / 255.0},
                     {"do_normalize", true},
                     {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
                     {"image_std", {0.26862954, 0.26130258, 0.27577711}}};
    io::write_file_atomic((fs::path(dir) / "preprocessor_config.json").string(), p.dump(2) + "\n");
    // What transformers' LlavaProcessor reads to expand "<image>" (one token per patch, plus the class token
    // unless the "default" strategy drops it).
    nlohmann::json pc{{"processor_class", "LlavaProcessor"},
                      {"image_token", "<image>"},
                      {"patch_size", cfg.llava.vision.patch_size},
                      {"vision_feature_select_strategy", cfg.llava.vision_feature_select_strategy},
                      {"num_additional_image_tokens", 1}};
    io::write_file_atomic((fs::path(dir) / "processor_config.json").string(), pc.dump(2) + "\n");
  }
}

io::NamedTensors Vlm::state() {
  std::vector<nn::ParamSlot> slots = text_.param_slots();
  if (has_vision()) {
    for (auto& sl : vision_.param_slots(-1)) slots.push_back(std::move(sl));
    for (auto& sl : projector_.param_slots()) slots.push_back(std::move(sl));
  }
  std::map<std::string, Tensor> current;
  for (const auto& sl : slots) current[sl.name] = sl.value;
  io::NamedTensors out;
  std::set<std::string> seen;
  auto add = [&](const std::string& name, const Tensor& original) {
    auto it = current.find(name);
    out.emplace_back(name, it != current.end() ? it->second : original);
    seen.insert(name);
  };
  if (!created_.empty()) {
    for (const auto& [name, t] : created_) add(name, t);
  } else {
    for (const auto& name : ckpt_.names()) add(name, ckpt_.get(name));
  }
  for (const auto& sl : slots)
    if (!seen.count(sl.name)) out.emplace_back(sl.name, sl.value);
  return out;
}

std::vector<nn::LinearSlot> Vlm::linear_slots() {
  std::vector<nn::LinearSlot> out;
  if (has_vision()) {
    out = vision_.linear_slots(cfg_.llava.feature_layer_index());
    for (auto& sl : projector_.linear_slots()) out.push_back(sl);
  }
  for (auto& sl : text_.linear_slots()) out.push_back(sl);
  return out;
}

ImageEncoding Vlm::encode_image(const float* pixels, int64_t C, int64_t H, int64_t W, const nn::Tap& tap) const {
  IRIS_CHECK(has_vision(), "this model has no vision tower: it cannot take an image");
  const LlavaConfig& c = cfg_.llava;
  ImageEncoding r;
  r.selected_layer = vision_.forward(pixels, C, H, W, c.feature_layer_index(), tap ? tap : env_dump_tap("vision"));
  r.features = c.vision_feature_select_strategy == "default"
                   ? r.selected_layer.slice(0, 1, r.selected_layer.dim(0)).contiguous()
                   : r.selected_layer;
  r.embeddings = projector_.forward(r.features.data<float>(), r.features.dim(0));
  return r;
}

Tensor Vlm::embed_prompt(const std::vector<int32_t>& ids, const std::vector<Tensor>& images) const {
  const int64_t D = text_.hidden_size(), S = int64_t(ids.size());
  Tensor e = Tensor::empty({S, D});
  float* ed = e.data<float>();
  const int32_t img = has_vision() ? image_token_id() : -1;
  // Embed text tokens; image-token rows are filled from the image embeddings below.
  int64_t n_img = 0;
  for (int64_t i = 0; i < S; ++i) {
    if (ids[size_t(i)] == img) {
      ++n_img;
      continue;
    }
    text_.embed(&ids[size_t(i)], 1, ed + i * D);
  }
  int64_t rows = 0;
  for (const Tensor& t : images) {
    IRIS_CHECK(t.ndim() == 2 && t.dim(1) == D, "image embeddings of shape ", shape_str(t.shape()),
               " do not match the text hidden size ", D);
    rows += t.dim(0);
  }
  IRIS_CHECK(n_img == rows, "the prompt has ", n_img, " image tokens but the images give ", rows,
             " embeddings (", images.size(), " image(s))");
  int64_t r = 0;
  size_t which = 0;
  int64_t within = 0;
  for (int64_t i = 0; i < S && r < rows; ++i) {
    if (ids[size_t(i)] != img) continue;
    while (within >= images[which].dim(0)) {
      ++which;
      within = 0;
    }
    std::copy_n(images[which].data<float>() + within * D, D, ed + i * D);
    ++within;
    ++r;
  }
  return e;
}

}  // namespace iris::models
