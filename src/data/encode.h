// Conversations to training token ids and labels. The ids are exactly what inference builds for the same
// conversation (the chat template, or LLaVA-1.5's format without one; BOS added unless the text starts with
// it; each image token repeated once per image embedding), and the labels supervise only what the model
// generates after each assistant prompt: the answer and the end-of-turn/EOS token the template writes after it.
// Everything else is kIgnoreIndex. Labels are aligned with ids position by position: the loss shifts them.
//
// How the answers are found: the conversation is rendered once; each answer's byte range comes from the format
// (LLaVA-1.5: known by construction; templates: it starts where the prompt rendered with add_generation_prompt
// ends and ends after the answer text, located through the template's {% generation %} ranges when it has them,
// plus a directly following EOS). The text is tokenized once, and each range boundary becomes a token index by
// tokenizing the text before it, which is checked to be a prefix of the whole tokenization. Where it is not
// (BPE merged across the boundary), the nearest consistent boundary is used and counted.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "text/conversation.h"
#include "text/tokenizer.h"

namespace iris::text {
class ChatTemplate;
}

namespace iris::data {

inline constexpr int32_t kIgnoreIndex = -100;

struct PromptFormat {
  const text::Tokenizer* tok = nullptr;  // required; copied (with "<image>" added as Engine adds it)
  std::string chat_template;             // Jinja source; "" = LLaVA-1.5's format (text::render_llava15)
  int32_t image_token = -1;              // id of the image placeholder ("<image>"); -1 = text-only model
  int64_t image_tokens_per_image = 1;    // copies of it per image (the number of image embeddings); 0: each
                                         // image's count is given to encode / tokenize (Qwen2-VL: by its size)
  std::vector<int32_t> eos_ids;          // ids that may close an answer; empty = tok->eos_ids()
  std::string default_system;            // system message for conversations without one; "" = none
};

// The format runtime::Engine uses for a model: the tokenizer's chat template (LLaVA-1.5's format when it has
// none), the model's image token and embeddings per image, and its end-of-turn ids (Engine::eos_ids()).
PromptFormat prompt_format_for(const text::Tokenizer& tok, int32_t image_token, int64_t image_tokens_per_image,
                               std::vector<int32_t> eos_ids = {});

struct Encoded {
  std::vector<int32_t> ids;     // (T)
  std::vector<int32_t> labels;  // (T): ids inside answers, kIgnoreIndex elsewhere
  int n_images = 0;             // images whose tokens are in ids
  int boundary_adjusted = 0;    // answer boundaries moved to a consistent token boundary
};

class ConversationEncoder {
 public:
  explicit ConversationEncoder(const PromptFormat& fmt);  // parses the template; throws iris::Error
  ~ConversationEncoder();
  ConversationEncoder(ConversationEncoder&&) noexcept;
  ConversationEncoder& operator=(ConversationEncoder&&) noexcept;

  // Throws DataError: no_assistant (no assistant turn), template_error (the template raised or failed),
  // image_mismatch (image tokens in the ids differ from the turns' images). Thread-safe (const).
  // image_tokens: the k-th image's token count (required when the format's image_tokens_per_image is 0).
  Encoded encode(const Sample& s, const std::vector<int64_t>& image_tokens = {}) const;
  Encoded encode(const std::vector<text::ChatMessage>& messages, const std::vector<int64_t>& image_tokens = {}) const;

  // The messages of a sample (with default_system applied).
  std::vector<text::ChatMessage> messages(const Sample& s) const;
  // What inference does: the prompt text for messages, and its ids (BOS rule, image tokens expanded).
  std::string render(const std::vector<text::ChatMessage>& messages, bool add_generation_prompt) const;
  std::vector<int32_t> tokenize(const std::string& prompt, const std::vector<int64_t>& image_tokens = {}) const;
  // The k-th image's token count: image_tokens[k], or the format's fixed count.
  int64_t image_token_count(const std::vector<int64_t>& image_tokens, size_t k) const;

  const text::Tokenizer& tokenizer() const { return tok_; }
  const PromptFormat& format() const { return fmt_; }

 private:
  text::Spans answer_spans(const std::vector<text::ChatMessage>& msgs, const std::string& full,
                           const text::Spans& generation) const;
  size_t token_boundary(const std::string& full, size_t pos, const std::vector<int32_t>& core, bool start,
                        int* adjusted) const;
  bool is_eos(int32_t id) const;

  PromptFormat fmt_;
  text::Tokenizer tok_;
  std::unique_ptr<text::ChatTemplate> tmpl_;
  std::vector<int32_t> eos_;
};

// One-off convenience (parses the template on every call; use ConversationEncoder in loops).
Encoded encode_conversation(const Sample& s, const PromptFormat& fmt);

// Cuts e to at most max_tokens without splitting an image's token run (the cut moves before it). Updates
// e.n_images to the images still complete and returns it. tokens_per_image: every image's count, or (second
// form) each image's.
int truncate_encoded(Encoded& e, int64_t max_tokens, int32_t image_token, int64_t tokens_per_image);
int truncate_encoded(Encoded& e, int64_t max_tokens, int32_t image_token, const std::vector<int64_t>& image_tokens);

}  // namespace iris::data
