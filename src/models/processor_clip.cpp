// LLaVA-1.5's image processor part.
#include "models/processor_clip.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "text/conversation.h"

namespace iris::models {

namespace fs = std::filesystem;

ClipProcessor::ClipProcessor(const LlavaConfig& cfg, const std::string& dir)
    : cfg_(cfg), tokens_(cfg.image_tokens_per_image()), image_token_id_(cfg.image_token_index) {
  const int s = cfg.vision.image_size;
  const fs::path pp = dir.empty() ? fs::path() : fs::path(dir) / "preprocessor_config.json";
  if (!dir.empty() && fs::exists(pp)) {
    pre_ = vision::PreprocessConfig::from_file(pp.string());
  } else {  // CLIPImageProcessor at the tower's resolution
    pre_.shortest_edge = s;
    pre_.crop_height = pre_.crop_width = s;
  }
  IRIS_CHECK(pre_.out_height() == s && pre_.out_width() == s, dir, ": the image processor makes ", pre_.out_width(),
             "x", pre_.out_height(), " images but the vision tower takes ", s, "x", s);
}

ImagePixels ClipProcessor::process(const vision::Image& img, const ProcessOptions& opt) const {
  vision::PreprocessConfig p = pre_;
  p.pad_to_square = p.pad_to_square || opt.pad_to_square;
  ImagePixels r;
  r.values = Tensor::from_vector(vision::preprocess(img, p), {3, p.out_height(), p.out_width()});
  r.grid_h = p.out_height() / cfg_.vision.patch_size;
  r.grid_w = p.out_width() / cfg_.vision.patch_size;
  return r;
}

Tensor ClipProcessor::batch_pixel_values(const std::vector<ImagePixels>& images) const {
  const int64_t C = cfg_.vision.num_channels, s = cfg_.vision.image_size;
  Tensor out = Tensor::empty({int64_t(images.size()), C, s, s});
  for (size_t i = 0; i < images.size(); ++i) {
    Tensor v = images[i].values.contiguous();
    IRIS_CHECK(v.numel() == C * s * s, "image ", i, ": pixel values ", shape_str(v.shape()), ", expected (", C, ", ", s,
               ", ", s, ")");
    std::copy_n(v.data<float>(), C * s * s, out.data<float>() + int64_t(i) * C * s * s);
  }
  return out;
}

std::vector<ImagePixels> ClipProcessor::split_pixel_values(const Tensor& pixel_values, const Tensor& grid_thw) const {
  const int64_t C = cfg_.vision.num_channels, s = cfg_.vision.image_size;
  IRIS_CHECK(!grid_thw.defined(), "LLaVA takes no image_grid_thw");
  IRIS_CHECK(pixel_values.ndim() == 4 && pixel_values.dtype() == DType::F32, "pixel values must be float32 (n, C, H, "
             "W), got ", dtype_name(pixel_values.dtype()), " ", shape_str(pixel_values.shape()));
  IRIS_CHECK(pixel_values.dim(1) == C && pixel_values.dim(2) == s && pixel_values.dim(3) == s, "pixel values ",
             shape_str(pixel_values.shape()), " do not match the vision tower's (n, ", C, ", ", s, ", ", s, ")");
  std::vector<ImagePixels> out;
  for (int64_t i = 0; i < pixel_values.dim(0); ++i) {
    ImagePixels p;
    p.values = pixel_values.select(0, i).contiguous();
    p.grid_h = p.grid_w = s / cfg_.vision.patch_size;
    out.push_back(std::move(p));
  }
  return out;
}

std::string ClipProcessor::default_chat_template() const {
  // LLaVA-1.5's conversation format (conv_llava_v1 / llava-hf's template): "USER: <image>\n{text} ASSISTANT:".
  return text::llava15_chat_template();
}

std::vector<std::pair<std::string, std::string>> ClipProcessor::config_files() const {
  const int s = cfg_.vision.image_size;
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
  // What transformers' LlavaProcessor reads to expand "<image>" (one token per patch, plus the class token
  // unless the "default" strategy drops it).
  nlohmann::json pc{{"processor_class", "LlavaProcessor"},
                    {"image_token", "<image>"},
                    {"patch_size", cfg_.vision.patch_size},
                    {"vision_feature_select_strategy", cfg_.vision_feature_select_strategy},
                    {"num_additional_image_tokens", 1}};
  return {{"preprocessor_config.json", p.dump(2) + "\n"}, {"processor_config.json", pc.dump(2) + "\n"}};
}

}  // namespace iris::models
