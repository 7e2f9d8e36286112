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

namespace iris::runtime {

struct EngineOptions {
  models::LoadOptions load;
  int64_t n_ctx = 0;             // 0: the model's max_position_embeddings, capped at 4096
  models::ProcessOptions process;  // image-processor settings: --image-pad square, --min-pixels / --max-pixels
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
  int64_t n_ctx() const { return n_ctx_; }
  const models::ProcessOptions& process_options() const { return process_; }
  // Sampling as the folder's generation_config.json sets it for Hugging Face's generate(): greedy unless
  // do_sample (then temperature, top_k (50 when absent), top_p), and repetition_penalty over the whole history
  // either way. Without the file: greedy, no penalty.
  const text::SamplingParams& generation_defaults() const { return gen_defaults_; }

  // The prompt text: the chat template when the folder has one, else the family's conversation format (LLaVA-1.5's
  // "USER: <image>\n... ASSISTANT:", Qwen2-VL's ChatML), or the plain text for a text-only model. Each image
  // appears as the family's image token inside its markers.
  std::string render_prompt(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const;
  // Token ids of a rendered prompt, the k-th image token repeated image_tokens[k] times (the processor's count for
  // that image). Empty image_tokens: every image the family's fixed count (an error where the count depends on
  // the image's size).
  std::vector<int32_t> tokenize_prompt(const std::string& prompt, const std::vector<int64_t>& image_tokens = {}) const;
  // The same with the counts of processed images.
  std::vector<int32_t> tokenize_prompt(const std::string& prompt, const std::vector<models::ImagePixels>& images) const;

  // The model's image processor on a decoded image (opt: per-request settings over the engine's).
  models::ImagePixels process_image(const vision::Image& img, const models::ProcessOptions* opt = nullptr) const;
  // Image embeddings of processed pixels, or of a decoded image.
  models::ImageFeatures encode_image(const models::ImagePixels& px) const;
  models::ImageFeatures encode_image(const vision::Image& img) const { return encode_image(process_image(img)); }

  // Runs prompt + images and generates. on_text receives each newly completed piece of text; returning false
  // stops generation (finish_reason "stop").
  GenerateResult generate(const std::vector<int32_t>& prompt, const std::vector<models::ImageFeatures>& images,
                          const GenerateOptions& opt,
                          const std::function<bool(const std::string&)>& on_text = nullptr) const;

 private:
  std::unique_ptr<models::Vlm> model_;
  std::string dir_;
  std::optional<text::Tokenizer> tok_;
  models::ProcessOptions process_;
  text::SamplingParams gen_defaults_;
  std::string chat_template_;
  int64_t n_ctx_ = 0;
  int32_t image_token_ = -1;
};

}  // namespace iris::runtime
