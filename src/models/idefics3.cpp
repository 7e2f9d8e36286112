// Idefics3 / SmolVLM parts: see idefics3.h.
#include "models/idefics3.h"

#include <algorithm>
#include <filesystem>
#include <tuple>
#include <nlohmann/json.hpp>

namespace iris::models {

namespace {

// Frames of all images, and the largest frame height and width: the padded batch HF's processor returns.
std::tuple<int64_t, int64_t, int64_t> batch_extent(const std::vector<ImagePixels>& images) {
  int64_t n = 0, H = 0, W = 0;
  for (const auto& p : images) {
    n += p.values.dim(0);
    H = std::max(H, p.values.dim(2));
    W = std::max(W, p.values.dim(3));
  }
  return {n, H, W};
}

[[noreturn]] void no_training() {
  throw Error("training Idefics3 / SmolVLM models is not supported yet (inference only)");
}

}  // namespace

Idefics3Processor::Idefics3Processor(const Idefics3Config& cfg, const std::string& dir) : cfg_(cfg) {
  const std::string path = dir.empty() ? "" : (std::filesystem::path(dir) / "preprocessor_config.json").string();
  if (!path.empty() && std::filesystem::exists(path)) {
    pre_ = vision::Idefics3ProcessorConfig::from_file(path);
  } else {
    pre_.tile = cfg.vision.image_size;
    pre_.longest_edge = 4 * cfg.vision.image_size;
    pre_.square_unsplit = cfg.smolvlm;
    if (cfg.smolvlm) pre_.image_processor_type = "SmolVLMImageProcessor";
  }
  IRIS_CHECK(pre_.tile == cfg.vision.image_size || !pre_.do_image_splitting, dir,
             ": preprocessor_config max_image_size ", pre_.tile, " is not the vision tower's image_size ",
             cfg.vision.image_size);
  image_seq_len_ = cfg.image_seq_len();
}

ImagePixels Idefics3Processor::process(const vision::Image& img, const ProcessOptions& opt) const {
  vision::Idefics3ProcessorConfig pre = pre_;
  if (opt.max_tiles == 1) {
    pre.do_image_splitting = false;  // the image whole, squashed to one tile (SmolVLM's unsplit form)
    pre.square_unsplit = true;
  } else if (opt.max_tiles > 1 && pre.do_image_splitting && pre.longest_edge > 0) {
    // The largest longest edge (whole tiles) whose grid has at most max_tiles tiles.
    int64_t L = pre.longest_edge / pre.tile * pre.tile;
    while (L > pre.tile) {
      pre.longest_edge = L;
      const vision::Idefics3Geometry g = vision::idefics3_geometry(img.height, img.width, pre);
      if (g.rows * g.cols <= opt.max_tiles) break;
      L -= pre.tile;
    }
    pre.longest_edge = std::max(L, pre.tile);
  }
  vision::Idefics3Image im = vision::idefics3_process(img, pre);
  const auto [H, W] = im.frame_hw.at(0);
  for (const auto& hw : im.frame_hw)
    IRIS_CHECK(hw.first == H && hw.second == W, "Idefics3 processor: frames of one image differ in size");
  const int64_t n = int64_t(im.frames.size());
  ImagePixels px;
  px.values = Tensor::empty({n, 3, H, W});
  for (int64_t f = 0; f < n; ++f) std::copy(im.frames[size_t(f)].begin(), im.frames[size_t(f)].end(),
                                            px.values.data<float>() + f * 3 * H * W);
  px.grid_h = im.rows;
  px.grid_w = im.cols;
  return px;
}

Tensor Idefics3Processor::batch_pixel_values(const std::vector<ImagePixels>& images) const {
  const auto [n, H, W] = batch_extent(images);
  Tensor out = Tensor::zeros({1, n, 3, H, W});
  int64_t f = 0;
  for (const auto& p : images)
    for (int64_t k = 0; k < p.values.dim(0); ++k, ++f) {
      const int64_t h = p.values.dim(2), w = p.values.dim(3);
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < h; ++y)
          std::copy_n(p.values.data<float>() + ((k * 3 + c) * h + y) * w, w,
                      out.data<float>() + ((f * 3 + c) * H + y) * W);
    }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Idefics3Processor::extra_outputs(
    const std::vector<ImagePixels>& images) const {
  const auto [n, H, W] = batch_extent(images);
  Tensor mask = Tensor::zeros({1, n, H, W}, DType::I64);
  int64_t f = 0;
  for (const auto& p : images)
    for (int64_t k = 0; k < p.values.dim(0); ++k, ++f) {
      const int64_t h = p.values.dim(2), w = p.values.dim(3);
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const bool real = !p.mask.defined() || p.mask.data<uint8_t>()[(k * h + y) * w + x] != 0;
          mask.data<int64_t>()[(f * H + y) * W + x] = real ? 1 : 0;
        }
    }
  return {{"pixel_attention_mask", mask}};
}

std::vector<ImagePixels> Idefics3Processor::split_pixel_values(const Tensor& pv_in, const Tensor& mask_in) const {
  IRIS_CHECK(pv_in.defined() && (pv_in.ndim() == 5 || pv_in.ndim() == 4),
             "Idefics3 pixel_values must be (1, frames, C, H, W) or (frames, C, H, W), got ",
             pv_in.defined() ? shape_str(pv_in.shape()) : std::string("nothing"));
  Tensor pv = pv_in.to(DType::F32).contiguous();
  if (pv.ndim() == 5) {
    IRIS_CHECK(pv.dim(0) == 1, "Idefics3 pixel_values: a batch of ", pv.dim(0), " prompts (one is supported)");
    pv = pv.view({pv.dim(1), pv.dim(2), pv.dim(3), pv.dim(4)});
  }
  const int64_t n = pv.dim(0), C = pv.dim(1), H = pv.dim(2), W = pv.dim(3);
  IRIS_CHECK(C == cfg_.vision.num_channels, "Idefics3 pixel_values have ", C, " channels, the tower takes ",
             cfg_.vision.num_channels);
  Tensor mask;
  if (mask_in.defined()) {
    mask = mask_in.to(DType::I64).contiguous();
    IRIS_CHECK(mask.numel() == n * H * W, "pixel_attention_mask ", shape_str(mask_in.shape()),
               " does not match pixel_values ", shape_str(pv_in.shape()));
  }
  std::vector<ImagePixels> out;
  for (int64_t f = 0; f < n; ++f) {
    const float* src = pv.data<float>() + f * C * H * W;
    if (std::all_of(src, src + C * H * W, [](float v) { return v == 0.0f; })) continue;
    ImagePixels p;
    p.values = Tensor::empty({1, C, H, W});
    std::copy_n(src, C * H * W, p.values.data<float>());
    if (mask.defined()) {
      p.mask = Tensor::empty({1, H, W}, DType::U8);
      for (int64_t i = 0; i < H * W; ++i) p.mask.data<uint8_t>()[i] = mask.data<int64_t>()[f * H * W + i] != 0;
    }
    out.push_back(std::move(p));
  }
  IRIS_CHECK(!out.empty(), "Idefics3 pixel_values hold no image (every frame is zero)");
  return out;
}

int64_t Idefics3Processor::tokens_for(const ImagePixels& px) const { return px.values.dim(0) * image_seq_len_; }

std::string Idefics3Processor::expand_image(const ImagePixels& px) const {
  std::string run;
  for (int64_t i = 0; i < image_seq_len_; ++i) run += "<image>";
  const std::string fake = "<fake_token_around_image>";
  const std::string global = fake + "<global-img>" + run + fake;
  if (px.grid_h == 0 || px.grid_w == 0) return global;
  IRIS_CHECK(px.values.dim(0) == px.grid_h * px.grid_w + 1, "Idefics3: ", px.values.dim(0), " frames for a ",
             px.grid_h, "x", px.grid_w, " tile grid and its global view");
  std::string s;
  for (int64_t r = 1; r <= px.grid_h; ++r) {
    for (int64_t c = 1; c <= px.grid_w; ++c)
      s += fake + "<row_" + std::to_string(r) + "_col_" + std::to_string(c) + ">" + run;
    s += "\n";
  }
  return s + "\n" + global;
}

std::vector<std::string> Idefics3Processor::marker_tokens(const ImagePixels& px) const {
  std::vector<std::string> m{"<fake_token_around_image>", "<global-img>"};
  for (int64_t r = 1; r <= px.grid_h; ++r)
    for (int64_t c = 1; c <= px.grid_w; ++c) m.push_back("<row_" + std::to_string(r) + "_col_" + std::to_string(c) + ">");
  return m;
}

std::string Idefics3Processor::default_chat_template() const {
  // SmolVLM / Idefics3's conversation: "<|im_start|>User:<image>text<end_of_utterance>\nAssistant:".
  return "<|im_start|>{% for message in messages %}"
         "{% if message['role'] == 'user' %}User{% elif message['role'] == 'assistant' %}Assistant"
         "{% else %}System{% endif %}"
         "{% if message['content'] is string %}: {{ message['content'] }}"
         "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
         "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
         "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
         "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
}

std::vector<std::pair<std::string, std::string>> Idefics3Processor::config_files() const {
  nlohmann::json proc{{"image_seq_len", image_seq_len_}};
  return {{"preprocessor_config.json", pre_.to_json().dump(2) + "\n"},
          {"processor_config.json", proc.dump(2) + "\n"}};
}

void Idefics3Vision::load(WeightLoader& w, const std::string& prefix, const Idefics3Config& cfg) {
  tower_.load(w, prefix, cfg.vision);
}

Tensor Idefics3Vision::forward(const ImagePixels& px, const nn::Tap& tap) const {
  IRIS_CHECK(px.values.ndim() == 4, "Idefics3 vision: pixel values must be (frames, C, H, W), got ",
             shape_str(px.values.shape()));
  const int64_t n = px.values.dim(0), C = px.values.dim(1), H = px.values.dim(2), W = px.values.dim(3);
  IRIS_CHECK(!px.mask.defined() || px.mask.numel() == n * H * W, "Idefics3 vision: the pixel mask does not match");
  std::vector<Tensor> frames;
  for (int64_t f = 0; f < n; ++f)
    frames.push_back(tower_.forward(px.values.data<float>() + f * C * H * W, C, H, W,
                                    px.mask.defined() ? px.mask.data<uint8_t>() + f * H * W : nullptr, tap));
  const int64_t seq = frames[0].dim(0), E = frames[0].dim(1);
  Tensor out = Tensor::empty({n * seq, E});
  for (int64_t f = 0; f < n; ++f) std::copy_n(frames[size_t(f)].data<float>(), seq * E, out.data<float>() + f * seq * E);
  if (tap) tap("vision_hidden", -1, out.data<float>(), n * seq, E);
  return out;
}

Tensor Idefics3Vision::forward_train(const ImagePixels&, std::unique_ptr<PartActs>&, bool) const { no_training(); }
void Idefics3Vision::backward(PartActs&, float*) const { no_training(); }

void Idefics3Connector::load(WeightLoader& w, const std::string& prefix, const Idefics3Config& cfg) {
  proj_.load(w, prefix, cfg.vision.hidden_size, cfg.scale_factor, cfg.text.hidden_size);
}

ImageFeatures Idefics3Connector::forward(const Tensor& features, const ImagePixels& px) const {
  ImageFeatures f;
  f.embeddings = proj_.forward(features, px.values.dim(0));
  return f;
}

ImageFeatures Idefics3Connector::forward_train(const Tensor&, const ImagePixels&, std::unique_ptr<PartActs>&) const {
  no_training();
}
void Idefics3Connector::backward(PartActs&, const float*, float*) const { no_training(); }

}  // namespace iris::models
