// Qwen2-VL's (and Qwen2.5-VL's) image processor part: Qwen2VLImageProcessor (vision/qwen2_vl_processor.h: smart
// resize to multiples of 28 within the folder's min_pixels / max_pixels, per-request bounds on top) to
// pixel_values rows (patches, C*tp*p*p) and image_grid_thw, and the prompt expansion: each image's
// "<|image_pad|>" repeated t*h*w / merge^2 times inside "<|vision_start|> ... <|vision_end|>".
#pragma once
#include "models/config.h"
#include "models/parts.h"
#include "vision/qwen2_vl_processor.h"

namespace iris::models {

class Qwen2VLProcessor : public ImageProcessor {
 public:
  // dir: the model folder (its preprocessor_config.json; without one, the class defaults).
  Qwen2VLProcessor(const Qwen2VLConfig& cfg, const std::string& dir);

  ImagePixels process(const vision::Image& img, const ProcessOptions& opt = {}) const override;
  Tensor batch_pixel_values(const std::vector<ImagePixels>& images) const override;
  std::vector<ImagePixels> split_pixel_values(const Tensor& pixel_values, const Tensor& grid_thw) const override;
  std::vector<std::pair<std::string, Tensor>> extra_outputs(const std::vector<ImagePixels>& images) const override;
  int64_t tokens_for(const ImagePixels& px) const override;
  std::string image_token() const override { return "<|image_pad|>"; }
  int32_t image_token_id() const override { return cfg_.image_token_id; }
  std::string image_placeholder() const override { return "<|vision_start|><|image_pad|><|vision_end|>"; }
  std::string default_chat_template() const override;
  std::vector<std::pair<std::string, std::string>> config_files() const override;
  const vision::Qwen2VLProcessorConfig& config() const { return pre_; }

 private:
  Qwen2VLConfig cfg_;
  vision::Qwen2VLProcessorConfig pre_;
};

}  // namespace iris::models
