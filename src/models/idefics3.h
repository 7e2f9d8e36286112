// Idefics3 / SmolVLM's parts (Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration):
//   processor   Idefics3ImageProcessor (vision/idefics3_processor.h): an image becomes tiles + a global view
//               (frames); each frame gives image_seq_len image tokens
//   vision      the SigLIP-style tower (siglip.h) over every frame, with Idefics3's bucketed positions and padding
//   connector   pixel shuffle by scale_factor + modality_projection (pixel_shuffle.h)
//   language    Llama (SmolLM2 / Llama 3)
// Training through these parts is not supported yet (a clear error).
#pragma once
#include "models/config.h"
#include "models/parts.h"
#include "models/pixel_shuffle.h"
#include "models/siglip.h"
#include "vision/idefics3_processor.h"

namespace iris::models {

class Idefics3Processor : public ImageProcessor {
 public:
  // dir: the model folder (its preprocessor_config.json; without one, the class defaults for the tower's tile).
  Idefics3Processor(const Idefics3Config& cfg, const std::string& dir);

  ImagePixels process(const vision::Image& img, const ProcessOptions& opt = {}) const override;
  // (1, frames of all images, C, H, W), frames zero-padded at the bottom / right to the largest of the batch.
  Tensor batch_pixel_values(const std::vector<ImagePixels>& images) const override;
  // pixel_values (1, n, C, H, W) or (n, C, H, W) and pixel_attention_mask (same with H, W; undefined: all real):
  // one ImagePixels per frame (which frames make one image is the prompt's business); all-zero frames (batch
  // padding) are dropped, as Hugging Face does.
  std::vector<ImagePixels> split_pixel_values(const Tensor& pixel_values, const Tensor& pixel_mask) const override;
  std::vector<std::pair<std::string, Tensor>> extra_outputs(const std::vector<ImagePixels>& images) const override;
  int64_t tokens_for(const ImagePixels& px) const override;
  // Idefics3Processor's prompt: per tile "<fake_token_around_image><row_r_col_c>" + image_seq_len "<image>", "\n"
  // after each row, then "\n<fake_token_around_image><global-img>" + image_seq_len "<image>" +
  // "<fake_token_around_image>"; an unsplit image is only the global part, without the leading "\n".
  std::string expand_image(const ImagePixels& px) const override;
  bool expands_with_markers() const override { return true; }
  std::vector<std::string> marker_tokens(const ImagePixels& px) const override;
  std::string image_token() const override { return "<image>"; }
  int32_t image_token_id() const override { return cfg_.image_token_id; }
  std::string image_placeholder() const override { return "<image>"; }
  std::string default_chat_template() const override;
  std::vector<std::pair<std::string, std::string>> config_files() const override;
  const vision::Idefics3ProcessorConfig& config() const { return pre_; }
  int64_t image_seq_len() const { return image_seq_len_; }

 private:
  Idefics3Config cfg_;
  vision::Idefics3ProcessorConfig pre_;
  int64_t image_seq_len_ = 0;
};

class Idefics3Vision : public VisionEncoder {
 public:
  void load(WeightLoader& w, const std::string& prefix, const Idefics3Config& cfg);
  int64_t out_dim() const override { return tower_.config().hidden_size; }
  // (frames * patches, E): each frame's patches row-major, frame after frame. The tap sees the tower's
  // intermediates and "vision_hidden" (the whole output).
  Tensor forward(const ImagePixels& px, const nn::Tap& tap = nullptr) const override;
  Tensor forward_train(const ImagePixels& px, std::unique_ptr<PartActs>& acts, bool checkpointing) const override;
  void backward(PartActs& acts, float* dfeat) const override;
  bool trains() const override { return false; }

 private:
  SiglipVision tower_;
};

class Idefics3Connector : public Connector {
 public:
  void load(WeightLoader& w, const std::string& prefix, const Idefics3Config& cfg);
  ImageFeatures forward(const Tensor& features, const ImagePixels& px) const override;
  ImageFeatures forward_train(const Tensor& features, const ImagePixels& px,
                              std::unique_ptr<PartActs>& acts) const override;
  void backward(PartActs& acts, const float* dy, float* dfeat) const override;
  bool trains() const override { return false; }

 private:
  PixelShuffleProjector proj_;
};

}  // namespace iris::models
