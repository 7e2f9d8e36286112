// The composite model over its parts: loading, saving, image encoding, the prompt's embeddings and rotary
// positions (Qwen2-VL's get_rope_index for M-RoPE), training slots and the image path's training pair.
#include "models/vlm.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "io/npy.h"
#include "models/processor_clip.h"
#include "models/idefics3.h"
#include "models/processor_qwen2_vl.h"
#include "models/vit_clip.h"

namespace iris::models {

namespace fs = std::filesystem;

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

Vlm::Vlm() = default;
Vlm::~Vlm() = default;

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
    m->build(w, opt.full_vision_tower, dir);
  } catch (const Error& e) {
    throw Error(str_cat(dir, ": ", e.what()));
  }
  m->unused_ = w.unused();
  return m;
}

std::unique_ptr<Vlm> Vlm::create(const ModelConfig& cfg, uint64_t seed, float std) {
  auto m = std::make_unique<Vlm>();
  m->cfg_ = cfg;
  m->precision_ = cpu::MatmulPrecision::F32;
  WeightLoader w(seed, std, m->precision_);
  m->build(w, /*full_vision_tower=*/true, "");
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
  nlohmann::json j = cfg.to_json();
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
  // The family's image-processor files, at their defaults for the model's shapes.
  std::unique_ptr<ImageProcessor> proc;
  if (cfg.arch == Architecture::Llava) proc = std::make_unique<ClipProcessor>(cfg.llava, "");
  if (cfg.arch == Architecture::Qwen2VL || cfg.arch == Architecture::Qwen2_5VL)
    proc = std::make_unique<Qwen2VLProcessor>(cfg.qwen2_vl, "");
  if (cfg.arch == Architecture::Idefics3) proc = std::make_unique<Idefics3Processor>(cfg.idefics3, "");
  if (proc)
    for (const auto& [name, content] : proc->config_files())
      io::write_file_atomic((fs::path(dir) / name).string(), content);
}

const ImageProcessor& Vlm::processor() const {
  IRIS_CHECK(processor_, "this model has no vision tower: it cannot take an image");
  return *processor_;
}
const VisionEncoder& Vlm::vision() const {
  IRIS_CHECK(vision_, "this model has no vision tower: it cannot take an image");
  return *vision_;
}
const Connector& Vlm::connector() const {
  IRIS_CHECK(connector_, "this model has no vision tower or connector");
  return *connector_;
}
VisionEncoder& Vlm::vision_mut() {
  IRIS_CHECK(vision_, "this model has no vision tower");
  return *vision_;
}
Connector& Vlm::connector_mut() {
  IRIS_CHECK(connector_, "this model has no connector");
  return *connector_;
}

const ClipVision& Vlm::clip_vision() const {
  const auto* c = dynamic_cast<const ClipEncoder*>(vision_.get());
  IRIS_CHECK(c, "this model has no CLIP vision tower (", cfg_.architecture_name(), ")");
  return c->tower();
}

std::vector<nn::ParamSlot> Vlm::param_slots(const std::string& component) {
  IRIS_CHECK(component == "llm" || component == "vision" || component == "projector", "unknown model component '",
             component, "' (expected vision, projector or llm)");
  return slots_.param_slots(component);
}

std::vector<nn::ParamSlot> Vlm::all_param_slots() { return slots_.param_slots("*"); }

io::NamedTensors Vlm::state() {
  std::vector<nn::ParamSlot> slots = all_param_slots();
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

std::vector<nn::LinearSlot> Vlm::linear_slots() { return slots_.linear_slots(); }

ImageFeatures Vlm::encode_image(const ImagePixels& px, const nn::Tap& tap) const {
  IRIS_CHECK(has_vision(), "this model has no vision tower: it cannot take an image");
  Tensor feat = vision_->forward(px, tap ? tap : env_dump_tap("vision"));
  return connector_->forward(feat, px);
}

bool Vlm::image_path_trains() const { return has_vision() && (vision_->trains() || connector_->trains()); }

ImageFeatures Vlm::encode_image_train(const ImagePixels& px, bool keep, ImageActs& acts, bool checkpointing) const {
  if (!keep) return encode_image(px);
  Tensor feat = vision_->trains() ? vision_->forward_train(px, acts.vision, checkpointing) : vision_->forward(px);
  acts.feat_rows = feat.dim(0);
  return connector_->forward_train(feat, px, acts.connector);
}

void Vlm::encode_image_backward(ImageActs& acts, const float* dy) const {
  if (!acts.vision) {
    connector_->backward(*acts.connector, dy, nullptr);
    return;
  }
  std::vector<float> dfeat(size_t(acts.feat_rows * vision_->out_dim()), 0.0f);
  connector_->backward(*acts.connector, dy, dfeat.data());
  vision_->backward(*acts.vision, dfeat.data());
}

PromptInput Vlm::prepare_prompt(const std::vector<int32_t>& ids, const std::vector<ImageFeatures>& images) const {
  const int64_t D = text_.hidden_size(), S = int64_t(ids.size());
  PromptInput r;
  r.embeddings = Tensor::empty({S, D});
  float* ed = r.embeddings.data<float>();
  const int32_t img = image_token_id();
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
  for (const ImageFeatures& f : images) {
    IRIS_CHECK(f.embeddings.ndim() == 2 && f.embeddings.dim(1) == D, "image embeddings of shape ",
               shape_str(f.embeddings.shape()), " do not match the text hidden size ", D);
    rows += f.n_tokens();
  }
  IRIS_CHECK(n_img == rows, "the prompt has ", n_img, " image tokens but the images give ", rows,
             " embeddings (", images.size(), " image(s))");
  int64_t r_done = 0;
  size_t which = 0;
  int64_t within = 0;
  for (int64_t i = 0; i < S && r_done < rows; ++i) {
    if (ids[size_t(i)] != img) continue;
    while (within >= images[which].n_tokens()) {
      ++which;
      within = 0;
    }
    std::copy_n(images[which].embeddings.data<float>() + within * D, D, ed + i * D);
    ++within;
    ++r_done;
  }

  const int64_t streams = text_.position_streams();
  if (streams == 1) {
    r.positions = Positions::range(0, S, 1);
    r.next_position = S;
    return r;
  }
  // M-RoPE (Qwen2-VL's get_rope_index): text tokens count on from the previous maximum + 1 in all three streams;
  // an image's tokens sit at (start + t, start + row, start + column) of its merged grid, start being where the
  // next text token would have been.
  Positions& p = r.positions;
  p.n_streams = 3;
  p.T = S;
  p.ids.assign(size_t(3 * S), 0);
  auto set = [&](int64_t i, int64_t t, int64_t h, int64_t w) {
    p.ids[size_t(i)] = t;
    p.ids[size_t(S + i)] = h;
    p.ids[size_t(2 * S + i)] = w;
  };
  int64_t next = 0, i = 0;
  for (const ImageFeatures& f : images) {
    for (; i < S && ids[size_t(i)] != img; ++i, ++next) set(i, next, next, next);
    const int64_t n = f.n_tokens();
    IRIS_CHECK(f.grid_t * f.grid_h * f.grid_w == n, "image features of ", n, " rows for a token grid of (", f.grid_t,
               ", ", f.grid_h, ", ", f.grid_w, ")");
    for (int64_t k = 0; k < n; ++k)
      IRIS_CHECK(i + k < S && ids[size_t(i + k)] == img, "an image's ", n, " image tokens must be consecutive in the "
                 "prompt (M-RoPE places them on the image's grid)");
    const int64_t start = next;
    int64_t mx = start;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t t = k / (f.grid_h * f.grid_w), h = (k / f.grid_w) % f.grid_h, w = k % f.grid_w;
      set(i + k, start + t, start + h, start + w);
      mx = std::max({mx, start + t, start + h, start + w});
    }
    i += n;
    next = mx + 1;
  }
  for (; i < S; ++i, ++next) set(i, next, next, next);
  r.next_position = next;
  return r;
}

}  // namespace iris::models
