// OpenAI response shapes (see openai_format.h).
#include "serve/openai_format.h"

#include <chrono>
#include <random>

#include "serve/errors.h"

namespace iris::serve {

using json = nlohmann::ordered_json;

std::string new_completion_id() {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = "chatcmpl-";
  for (int i = 0; i < 24; ++i) id += alphabet[rng() % 62];
  return id;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* system_fingerprint() {
  return "fp_iris_" IRIS_VERSION;
}

std::string openai_finish_reason(const std::string& reason) {
  if (reason == "stop" || reason == "length") return reason;
  if (reason == "time_limit") return "length";
  return reason.empty() ? "stop" : reason;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json completion_json(const CompletionMeta& m, const std::string& text, const std::string& finish_reason,
                     const Usage& u) {
  json choice{{"index", 0},
              {"message", {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}}},
              {"logprobs", nullptr},
              {"finish_reason", finish_reason}};
  return {{"id", m.id},
          {"object", "chat.completion"},
          {"created", m.created},
          {"model", m.model},
          {"system_fingerprint", system_fingerprint()},
          {"choices", json::array({choice})},
          {"usage", usage_json(u)}};
}

json chunk_json(const CompletionMeta& m, const json& delta, const std::string& finish_reason,
                bool with_usage_null) {
  json choice{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (!finish_reason.empty()) choice["finish_reason"] = finish_reason;
  json j{
      {"id", m.id},       {"object", "chat.completion.chunk"},          {"created", m.created},
      {"model", m.model}, {"system_fingerprint", system_fingerprint()}, {"choices", json::array({choice})}};
  if (with_usage_null) j["usage"] = nullptr;
  return j;
}

json usage_chunk_json(const CompletionMeta& m, const Usage& u) {
  return {{"id", m.id},
          {"object", "chat.completion.chunk"},
          {"created", m.created},
          {"model", m.model},
          {"system_fingerprint", system_fingerprint()},
          {"choices", json::array()},
          {"usage", usage_json(u)}};
}

std::string sse_event(const json& j) {
  return "data: " + dump_json(j) + "\n\n";
}

json model_json(const std::string& id, int64_t created) {
  return {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "iris"}};
}

}  // namespace iris::serve
