// Response bodies in OpenAI's chat-completions shapes: the completion object, the streamed chunks
// ("chat.completion.chunk", ending with "data: [DONE]"), usage, and the model list.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace iris::serve {

struct CompletionMeta {
  std::string id;       // "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// "chatcmpl-" + 24 random letters and digits.
std::string new_completion_id();
int64_t unix_now();
const char* system_fingerprint();

// OpenAI's finish_reason for the scheduler's: "stop", "length"; a request stopped by its time limit was cut
// short like one that ran out of tokens, so it reads "length".
std::string openai_finish_reason(const std::string& reason);

nlohmann::ordered_json usage_json(const Usage& u);
nlohmann::ordered_json completion_json(const CompletionMeta& m, const std::string& text,
                                       const std::string& finish_reason, const Usage& u);
// One chunk with one choice. delta: {"role": "assistant", "content": ""} first, then {"content": piece}, then
// {} with the finish reason. with_usage_null: stream_options.include_usage asks for "usage": null on every
// chunk.
nlohmann::ordered_json chunk_json(const CompletionMeta& m, const nlohmann::ordered_json& delta,
                                  const std::string& finish_reason, bool with_usage_null);
// The last chunk when include_usage is on: no choices, the usage.
nlohmann::ordered_json usage_chunk_json(const CompletionMeta& m, const Usage& u);
// "data: <json>\n\n"
std::string sse_event(const nlohmann::ordered_json& j);
inline const char* sse_done() {
  return "data: [DONE]\n\n";
}

nlohmann::ordered_json model_json(const std::string& id, int64_t created);

}  // namespace iris::serve
