// The inference engine over one model folder: model, tokenizer, chat template and image preprocessing; builds
// prompts (image tokens expanded once per image embedding, as Hugging Face does now) and generates text.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/vlm.h"
#include "runtime/session.h"
#include "text/sampler.h"
#include "text/tokenizer.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace iris::runtime {

struct EngineOptions {
  models::LoadOptions load;
  int64_t n_ctx = 0;             // 0: the model's max_position_embeddings, capped at 4096
  bool pad_to_square = false;    // LLaVA-1.5's original "pad" aspect-ratio mode (--image-pad square)
  vision::DecodeOptions decode;  // pixel limit, EXIF orientation
  // Runs on the model right after loading (e.g. the CLI applies a LoRA adapter here).
  std::function<void(models::Vlm&)> on_model_loaded;
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string text;
  int n_images = 0;  // images attached to this message (placed before the text, as LLaVA's template does)
};

struct GenerateOptions {
  int max_new_tokens = 256;  // -1: until EOS or the context is full
  text::SamplingParams sampling;
  bool stop_at_eos = true;
  std::vector<std::string> stop;  // stop strings (not included in the output)
};

struct Timings {
  double image_encode_ms = 0;
  int images = 0;
  int64_t prompt_tokens = 0;
  double prefill_ms = 0;
  int64_t generated_tokens = 0;
  double decode_ms = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;  // "stop" (EOS or stop string) or "length"
  Timings timings;
};

class Engine {
 public:
  static std::unique_ptr<Engine> load(const std::string& dir, const EngineOptions& opt = {});

  const models::Vlm& model() const { return *model_; }
  const text::Tokenizer& tokenizer() const;  // throws when the folder has no tokenizer.json
  // Ids that end generation: the tokenizer's EOS (and generation_config's) and config.json's eos_token_id.
  std::vector<int32_t> eos_ids() const;
  const vision::PreprocessConfig& preprocess_config() const { return pre_; }
  int64_t n_ctx() const { return n_ctx_; }

  // The prompt text: the chat template when the model has one, else LLaVA-1.5's "USER: <image>\n... ASSISTANT:"
  // (or the plain text for a text-only model). Images appear as "<image>".
  std::string render_prompt(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const;
  // Token ids of a rendered prompt, each image token repeated once per image embedding.
  std::vector<int32_t> tokenize_prompt(const std::string& prompt) const;

  // Normalised pixel values (3, H, W) of an image, as the model's image processor computes them.
  std::vector<float> pixel_values(const vision::Image& img) const;
  // Image embeddings (n_tokens, D) of an image file's bytes or a decoded image.
  Tensor encode_image(const vision::Image& img) const;

  // Runs prompt + images and generates. on_text receives each newly completed piece of text; returning false
  // stops generation (finish_reason "stop").
  GenerateResult generate(const std::vector<int32_t>& prompt, const std::vector<Tensor>& images,
                          const GenerateOptions& opt,
                          const std::function<bool(const std::string&)>& on_text = nullptr) const;

 private:
  std::unique_ptr<models::Vlm> model_;
  std::string dir_;
  std::optional<text::Tokenizer> tok_;
  vision::PreprocessConfig pre_;
  std::string chat_template_;
  int64_t n_ctx_ = 0;
  int32_t image_token_ = -1;
};

}  // namespace iris::runtime
