// LLaVA-1.5's image processor part: CLIPImageProcessor (resize the short side, centre crop, rescale, normalise;
// optionally LLaVA's pad-to-square first) to (3, H, W) pixel values, and the prompt expansion: "<image>" repeated
// once per image embedding, as Hugging Face's LlavaProcessor writes it.
#pragma once
#include "models/config.h"
#include "models/parts.h"
#include "vision/preprocess.h"

namespace iris::models {

class ClipProcessor : public ImageProcessor {
 public:
  // dir: the model folder (its preprocessor_config.json; without one, CLIPImageProcessor at the tower's size).
  ClipProcessor(const LlavaConfig& cfg, const std::string& dir);

  ImagePixels process(const vision::Image& img, const ProcessOptions& opt = {}) const override;
  Tensor batch_pixel_values(const std::vector<ImagePixels>& images) const override;
  std::vector<ImagePixels> split_pixel_values(const Tensor& pixel_values, const Tensor& grid_thw) const override;
  int64_t tokens_for(const ImagePixels&) const override { return tokens_; }
  int64_t fixed_tokens() const override { return tokens_; }
  std::string default_chat_template() const override;
  std::string image_token() const override { return "<image>"; }
  int32_t image_token_id() const override { return image_token_id_; }
  std::string image_placeholder() const override { return "<image>\n"; }
  std::vector<std::pair<std::string, std::string>> config_files() const override;
  const vision::PreprocessConfig& config() const { return pre_; }

 private:
  LlavaConfig cfg_;
  vision::PreprocessConfig pre_;
  int64_t tokens_ = 0;
  int32_t image_token_id_ = 0;
};

}  // namespace iris::models
