// The parts a vision-language model is made of, as small interfaces (one file per family member implements one):
//   image processor   vision::Image -> ImagePixels (the family's pixel layout, its grid) and the prompt expansion
//                     (which token stands for an image, how many copies of it an image becomes)
//   vision encoder    ImagePixels -> features (n, vision width)
//   connector         features -> embeddings (n_tokens, text width), with their token grid (M-RoPE positions)
//   language model    models::Llama (the LLaMA-style decoder that Llama and Qwen2 share; llama.h)
// models/registry.cpp builds the parts a config.json names; models::Vlm owns them and runs the composite forward
// and backward. A part's weight names appear once, in its load function: the loader records every weight and
// linear as the part loads it (models/weights.h), and training, LoRA and saving use that record. Nothing above
// models/ knows which family it runs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "tensor/tensor.h"
#include "vision/image.h"

namespace iris::models {

// One image as its family's processor prepared it, ready for the vision encoder.
struct ImagePixels {
  // LLaVA / CLIP: (C, H, W) normalised. Qwen2-VL: (patches, C*tp*p*p), Hugging Face's pixel_values rows.
  // Idefics3 / SmolVLM: (frames, C, H, W), the image's tiles row-major then its global view (or the one unsplit
  // frame).
  Tensor values;
  int64_t grid_t = 1, grid_h = 0, grid_w = 0;  // patches along time, height, width (Qwen2-VL's image_grid_thw);
                                               // Idefics3: grid_h x grid_w tiles (0 x 0: not split)
  Tensor mask;  // Idefics3: (frames, H, W) uint8, nonzero = real pixel (pixel_attention_mask); undefined: all real
};

// What one image becomes for the language model: the rows spliced at its image tokens, and their grid (the
// M-RoPE t/h/w extent of the image's tokens; LLaVA's are one stream and ignore it).
struct ImageFeatures {
  Tensor embeddings;  // (n_tokens, text hidden)
  int64_t grid_t = 1, grid_h = 1, grid_w = 1;
  int64_t n_tokens() const { return embeddings.defined() ? embeddings.dim(0) : 0; }
};

// Per-request image-processor settings (CLI flags, server request fields); 0 keeps the folder's value.
struct ProcessOptions {
  int64_t min_pixels = 0, max_pixels = 0;  // Qwen2-VL's pixel budget per image
  bool pad_to_square = false;              // LLaVA-1.5's original "pad" aspect-ratio mode
  int64_t max_tiles = 0;                   // Idefics3 / SmolVLM: most tiles per image (1: the image whole, unsplit)
};

// Activations a part keeps between its training forward and its backward.
struct PartActs {
  virtual ~PartActs() = default;
};

// The family's image processor and prompt expansion.
class ImageProcessor {
 public:
  virtual ~ImageProcessor() = default;
  // Decoded image -> pixel values, as the family's Hugging Face image processor computes them.
  virtual ImagePixels process(const vision::Image& img, const ProcessOptions& opt = {}) const = 0;
  // The pixel values as the Hugging Face model takes them for a batch of these images (iris forward's
  // --pixel-values / --save-processor-outputs): LLaVA (n, C, H, W); Qwen2-VL (sum of patches, C*tp*p*p).
  virtual Tensor batch_pixel_values(const std::vector<ImagePixels>& images) const = 0;
  // The inverse: images out of a Hugging Face pixel_values array (and image_grid_thw where the family has one,
  // else an undefined tensor). Shapes that disagree are an error.
  virtual std::vector<ImagePixels> split_pixel_values(const Tensor& pixel_values, const Tensor& grid_thw) const = 0;
  // Other arrays the Hugging Face processor returns, by name (Qwen2-VL: image_grid_thw (n, 3) int64).
  virtual std::vector<std::pair<std::string, Tensor>> extra_outputs(const std::vector<ImagePixels>& images) const {
    return {};
  }
  // Image tokens one processed image becomes in the prompt.
  virtual int64_t tokens_for(const ImagePixels& px) const = 0;
  // The text that stands for one processed image after expansion, as the family's Hugging Face processor writes
  // it into the prompt: the image token repeated tokens_for times (LLaVA, Qwen2-VL's pad tokens), or wrapped in
  // the family's markers (Idefics3: tiles with <row_r_col_c>, the global view).
  virtual std::string expand_image(const ImagePixels& px) const {
    std::string s;
    for (int64_t i = 0, n = tokens_for(px); i < n; ++i) s += image_token();
    return s;
  }
  // Whether expand_image writes more than the image token (then prompts are expanded as text, before tokenizing,
  // and each of marker_tokens must be one token of the tokenizer).
  virtual bool expands_with_markers() const { return false; }
  virtual std::vector<std::string> marker_tokens(const ImagePixels& px) const { return {}; }
  // The same for every image (LLaVA), or 0 when it depends on the image's size (Qwen2-VL).
  virtual int64_t fixed_tokens() const { return 0; }
  // The token that stands for an image in the text (repeated tokens_for times in the ids), its id.
  virtual std::string image_token() const = 0;
  virtual int32_t image_token_id() const = 0;
  // What a prompt holds for one image when no chat template writes it: "<image>\n" (LLaVA-1.5),
  // "<|vision_start|><|image_pad|><|vision_end|>" (Qwen2-VL).
  virtual std::string image_placeholder() const = 0;
  // The chat template used when the folder has none (Jinja, over messages whose content is a list of
  // {"type": "image"} and {"type": "text", "text": ...} parts): the family's conversation format.
  virtual std::string default_chat_template() const = 0;
  // The files a saved model folder needs to describe this processor (name, content).
  virtual std::vector<std::pair<std::string, std::string>> config_files() const = 0;
};

class VisionEncoder {
 public:
  virtual ~VisionEncoder() = default;
  virtual int64_t out_dim() const = 0;  // feature width
  // Pixels -> features (n, out_dim) in the order the connector takes them. The tap sees named intermediates.
  virtual Tensor forward(const ImagePixels& px, const nn::Tap& tap = nullptr) const = 0;
  // Training forward, keeping what backward needs in acts (created here).
  virtual Tensor forward_train(const ImagePixels& px, std::unique_ptr<PartActs>& acts, bool checkpointing) const = 0;
  // dfeat (n, out_dim): the gradient of the features (destroyed). Accumulates the gradients of what trains.
  virtual void backward(PartActs& acts, float* dfeat) const = 0;
  virtual bool trains() const = 0;
};

class Connector {
 public:
  virtual ~Connector() = default;
  // features (n, vision width) of one image -> its embeddings and their token grid.
  virtual ImageFeatures forward(const Tensor& features, const ImagePixels& px) const = 0;
  virtual ImageFeatures forward_train(const Tensor& features, const ImagePixels& px,
                                      std::unique_ptr<PartActs>& acts) const = 0;
  // dy (n_tokens, text width) -> dfeat (n, vision width) (nullptr: not needed); accumulates what trains.
  virtual void backward(PartActs& acts, const float* dy, float* dfeat) const = 0;
  virtual bool trains() const = 0;
};

}  // namespace iris::models
