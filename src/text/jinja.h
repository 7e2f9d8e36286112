// Chat templates: a Jinja2 interpreter for the `chat_template` strings shipped with Hugging Face models
// (tokenizer_config.json, chat_template.json, chat_template.jinja). It renders them the way transformers'
// apply_chat_template does: Jinja's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks on, the
// loopcontrols extension ({% break %}, {% continue %}), the {% generation %} tag, transformers' tojson and
// the globals raise_exception and strftime_now. Undefined names render as "" and are falsy; attribute access
// on an undefined value gives undefined instead of Jinja's error (lenient). Unsupported: template
// inheritance/includes,
// {% call %}, recursive loops, *args/**kwargs in calls and a few rarely used filters (the parser names them).
#pragma once
#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tensor/error.h"

namespace iris::text {

namespace jinja {
struct Template;
}

// Thrown by a template's raise_exception(msg); what() is exactly msg. A server should answer it with a client
// error (the conversation does not fit the model's format), not an internal one.
class TemplateRaised : public iris::Error {
 public:
  using iris::Error::Error;
};

class ChatTemplate {
 public:
  // Parses once. Syntax errors (and unknown filters or tests) throw iris::Error naming the line and column.
  explicit ChatTemplate(const std::string& source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // context: a JSON object, e.g. {"messages": [...], "add_generation_prompt": true, "bos_token": "<s>", ...}.
  // Runtime errors throw iris::Error naming the template line; raise_exception throws TemplateRaised.
  // With nlohmann::json the keys of every object are sorted (that type stores them sorted), which only shows
  // in `tojson` output and dict iteration order; pass nlohmann::ordered_json to keep the caller's order.
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;
  // Also returns the byte ranges [begin, end) of the output that {% generation %} blocks produced (the
  // assistant turns, for training masks, as transformers' return_assistant_tokens_mask).
  std::string render(const nlohmann::ordered_json& context,
                     std::vector<std::pair<size_t, size_t>>* generation_spans) const;

  // Convenience for the usual call: messages in OpenAI/HF form ([{"role": "user", "content": "text" or
  // [{"type": "image"}, {"type": "text", "text": "..."}]}]), the generation prompt flag, the special tokens,
  // and any extra variables (tools, documents, enable_thinking, ...) from `extra`, which must be an object or
  // null.
  std::string render_messages(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                              const std::string& bos_token = "", const std::string& eos_token = "",
                              const nlohmann::ordered_json& extra = nullptr) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const jinja::Template> tmpl_;
};

// The template text from a parsed tokenizer_config.json / chat_template.json object: its "chat_template" is
// either a string or a list of {"name", "template"} (then `name` is picked, "default" by default). Throws
// iris::Error when there is none.
std::string chat_template_from_config(const nlohmann::json& config, const std::string& name = "default");

// Finds a model folder's chat template as transformers does: chat_template.jinja, then chat_template.json,
// then tokenizer_config.json. Returns "" when none of them has one; throws iris::Error for unreadable or
// invalid files.
std::string read_chat_template(const std::string& model_dir, const std::string& name = "default");

}  // namespace iris::text
