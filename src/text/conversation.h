// Conversations as prompt text: LLaVA-1.5's built-in format (conv_llava_v1, used when a model has no chat
// template) and the message list a chat template receives. Inference (runtime::Engine) and training (data/)
// both render prompts through these, so the token ids a model is trained on are the ids it sees when serving.
#pragma once
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace iris::text {

class ChatTemplate;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string text;
  int n_images = 0;  // images attached to this message, placed before the text (as LLaVA's templates do)
};

// Byte ranges [begin, end) of rendered text.
using Spans = std::vector<std::pair<size_t, size_t>>;

// LLaVA-1.5's conversation format:
//   "<system> USER: <image>\n<question> ASSISTANT: <answer><eos>USER: ... ASSISTANT:"
// A system message is its text followed by a space; a user message is "USER: ", one "<image>\n" per image, its
// text and a space; an assistant message is "ASSISTANT: ", its text and eos_token. add_generation_prompt appends
// "ASSISTANT:". answer_spans (optional) receives, for each assistant message, the range from right after
// "ASSISTANT:" (the end of the generation prompt, so the space before the answer is included) to the end of
// its eos_token: what a model generates after that prompt.
std::string render_llava15(const std::vector<ChatMessage>& messages, const std::string& eos_token,
                           bool add_generation_prompt, Spans* answer_spans = nullptr);

// A Jinja chat template that renders exactly what render_llava15 renders, for messages as chat_messages_json
// builds them (content lists of {"type": "image"} and {"type": "text", "text": ...} parts) or with plain string
// content. Each assistant turn's " " + images + text + eos_token is a {% generation %} block, so the generation
// spans equal render_llava15's answer_spans. Tokenizers trained by iris (`iris data tokenizer`) ship it.
const std::string& llava15_chat_template();

// The messages in the form chat templates receive them: [{"content": [{"type": "image"}, ...,
// {"text": "...", "type": "text"}], "role": "user"}, ...] (keys in sorted order, so nlohmann::json and
// nlohmann::ordered_json render the same).
nlohmann::ordered_json chat_messages_json(const std::vector<ChatMessage>& messages);

// Renders messages with a chat template and the context transformers passes (messages, add_generation_prompt,
// bos_token, eos_token). generation_spans (optional) receives the ranges of {% generation %} blocks.
std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt, const std::string& bos_token, const std::string& eos_token,
                        Spans* generation_spans = nullptr);

}  // namespace iris::text
