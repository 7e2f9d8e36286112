// Parsing and validation of chat-completion requests (see chat_request.h).
#include "serve/chat_request.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "serve/errors.h"

namespace iris::serve {

using Json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw HttpError(400, message, param);
}

const char* type_name(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::binary:
      return "binary";
    case Json::value_t::discarded:
      return "nothing";
    default:
      return "a number";
  }
}

[[noreturn]] void wrong_type(const std::string& param, const Json& v, const char* expected) {
  bad(param, "Invalid type for '" + param + "': expected " + expected + ", but got " + type_name(v) + ".");
}

const std::string& get_string(const Json& v, const std::string& param) {
  if (!v.is_string()) wrong_type(param, v, "a string");
  return v.get_ref<const std::string&>();
}

bool get_bool(const Json& v, const std::string& param) {
  if (!v.is_boolean()) wrong_type(param, v, "a boolean");
  return v.get<bool>();
}

double get_number(const Json& v, const std::string& param, double lo, double hi) {
  if (!v.is_number()) wrong_type(param, v, "a number");
  double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(param, "Invalid value for '" + param + "': " + v.dump() + " is not in [" + Json(lo).dump() + ", " +
                   Json(hi).dump() + "].");
  return x;
}

// Integers; a float is taken only when it holds an integer exactly (JavaScript clients may send 16.0).
int64_t get_int(const Json& v, const std::string& param, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_integer() && !v.is_number_unsigned()) {
    x = v.get<int64_t>();
  } else if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(hi))
      bad(param, "Invalid value for '" + param + "': " + v.dump() + " is too large (at most " +
                     std::to_string(hi) + ").");
    x = int64_t(u);
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) >= 9e18 || d < double(lo) || d > double(hi))
      bad(param, "Invalid value for '" + param + "': expected an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got " + v.dump() + ".");
    x = int64_t(d);
  } else {
    wrong_type(param, v, "an integer");
  }
  if (x < lo || x > hi)
    bad(param, "Invalid value for '" + param + "': " + std::to_string(x) + " is not in [" +
                   std::to_string(lo) + ", " + std::to_string(hi) + "].");
  return x;
}

// A content part: {"type": "text", "text": ...} or {"type": "image_url", "image_url": {"url": ..., "detail":
// ...}}.
void parse_part(const Json& part, const std::string& param, ChatMessageIn& msg,
                std::vector<std::string>& texts) {
  if (!part.is_object()) wrong_type(param, part, "an object");
  auto t = part.find("type");
  if (t == part.end()) bad(param + ".type", "Missing required parameter: '" + param + ".type'.");
  const std::string& type = get_string(*t, param + ".type");
  if (type == "text") {
    for (auto& [k, v] : part.items())
      if (k != "type" && k != "text")
        bad(param + "." + k, "Unrecognized parameter in a text part: '" + param + "." + k + "'.");
    auto x = part.find("text");
    if (x == part.end()) bad(param + ".text", "Missing required parameter: '" + param + ".text'.");
    texts.push_back(get_string(*x, param + ".text"));
  } else if (type == "image_url") {
    for (auto& [k, v] : part.items())
      if (k != "type" && k != "image_url")
        bad(param + "." + k, "Unrecognized parameter in an image_url part: '" + param + "." + k + "'.");
    auto iu = part.find("image_url");
    const std::string p = param + ".image_url";
    if (iu == part.end()) bad(p, "Missing required parameter: '" + p + "'.");
    std::string url;
    if (iu->is_string()) {  // some clients send the URL directly
      url = iu->get<std::string>();
    } else if (iu->is_object()) {
      for (auto& [k, v] : iu->items()) {
        if (k == "url") {
          url = get_string(v, p + ".url");
        } else if (k == "detail") {
          const std::string& d = get_string(v, p + ".detail");
          if (d != "auto" && d != "low" && d != "high")
            bad(p + ".detail", "Invalid value for '" + p + ".detail': expected 'auto', 'low' or 'high'.");
        } else {
          bad(p + "." + k, "Unrecognized parameter in image_url: '" + p + "." + k + "'.");
        }
      }
      if (iu->find("url") == iu->end()) bad(p + ".url", "Missing required parameter: '" + p + ".url'.");
    } else {
      wrong_type(p, *iu, "an object");
    }
    if (url.empty()) bad(p + ".url", "'" + p + ".url' is empty.");
    msg.images.push_back({std::move(url), p});
  } else if (type == "input_audio" || type == "file" || type == "refusal") {
    bad(param + ".type", "Content parts of type '" + type +
                             "' are not supported by this server (only 'text' and "
                             "'image_url').");
  } else {
    bad(param + ".type",
        "Invalid value for '" + param + ".type': '" + type + "' (expected 'text' or 'image_url').");
  }
}

ChatMessageIn parse_message(const Json& m, const std::string& param) {
  if (!m.is_object()) wrong_type(param, m, "an object");
  ChatMessageIn msg;
  auto r = m.find("role");
  if (r == m.end()) bad(param + ".role", "Missing required parameter: '" + param + ".role'.");
  msg.role = get_string(*r, param + ".role");
  if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for system messages
  if (msg.role == "tool" || msg.role == "function")
    bad(param + ".role",
        "Messages with role '" + msg.role + "' are not supported: this server has no tool calls.");
  if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
    bad(param + ".role", "Invalid value for '" + param + ".role': '" + msg.role +
                             "' (expected 'system', 'developer', 'user' or 'assistant').");
  for (auto& [k, v] : m.items()) {
    if (k == "role" || k == "content") continue;
    if (k == "name") {
      get_string(v, param + ".name");
    } else if (k == "refusal" && v.is_null()) {
    } else if ((k == "tool_calls" || k == "function_call") && (v.is_null() || (v.is_array() && v.empty()))) {
    } else if (k == "tool_calls" || k == "function_call" || k == "tool_call_id" || k == "audio") {
      bad(param + "." + k, "'" + param + "." + k + "' is not supported by this server.");
    } else {
      bad(param + "." + k, "Unrecognized parameter in a message: '" + param + "." + k + "'.");
    }
  }
  auto c = m.find("content");
  if (c == m.end() || c->is_null())
    bad(param + ".content", "Missing required parameter: '" + param + ".content'.");
  std::vector<std::string> texts;
  if (c->is_string()) {
    texts.push_back(c->get<std::string>());
  } else if (c->is_array()) {
    size_t i = 0;
    for (const Json& part : *c) parse_part(part, param + ".content[" + std::to_string(i++) + "]", msg, texts);
  } else {
    wrong_type(param + ".content", *c, "a string or an array of content parts");
  }
  if (!msg.images.empty() && msg.role != "user")
    bad(param + ".content", "Images are only allowed in user messages ('" + param + "' has role '" +
                                m["role"].get<std::string>() + "').");
  for (size_t i = 0; i < texts.size(); ++i) msg.text += (i ? "\n" : "") + texts[i];
  // The image placeholder is how the prompt marks where image embeddings go: text may not forge one.
  if (msg.text.find("<image>") != std::string::npos)
    bad(param + ".content", "Message text may not contain '<image>': send images as image_url parts.");
  return msg;
}

void parse_stop(const Json& v, ChatRequest& r, const ChatLimits& lim) {
  auto add = [&](const Json& s, const std::string& param) {
    const std::string& x = get_string(s, param);
    if (x.empty()) bad(param, "Invalid value for '" + param + "': stop strings may not be empty.");
    if (x.size() > lim.max_stop_bytes)
      bad(param, "Invalid value for '" + param + "': stop strings are limited to " +
                     std::to_string(lim.max_stop_bytes) + " bytes.");
    r.stop.push_back(x);
  };
  if (v.is_string()) {
    add(v, "stop");
  } else if (v.is_array()) {
    if (v.size() > lim.max_stop)
      bad("stop", "Invalid value for 'stop': at most " + std::to_string(lim.max_stop) + " stop strings.");
    for (size_t i = 0; i < v.size(); ++i) add(v[i], "stop[" + std::to_string(i) + "]");
  } else {
    wrong_type("stop", v, "a string or an array of strings");
  }
}

// Fields of OpenAI's API that iris does not implement: taken only at the value that means "off".
void check_neutral(const std::string& k, const Json& v) {
  auto unsupported = [&](const std::string& what) {
    bad(k, "'" + k + "' " + what + " is not supported by this server.");
  };
  if (k == "n") {
    if (get_int(v, k, 1, 128) != 1) unsupported("other than 1");
  } else if (k == "frequency_penalty" || k == "presence_penalty") {
    if (get_number(v, k, -2.0, 2.0) != 0.0) unsupported("other than 0 (use 'repetition_penalty')");
  } else if (k == "logprobs") {
    if (get_bool(v, k)) unsupported("= true");
  } else if (k == "top_logprobs") {
    if (get_int(v, k, 0, 20) != 0) unsupported("other than 0");
  } else if (k == "logit_bias") {
    if (!v.is_object()) wrong_type(k, v, "an object");
    if (!v.empty()) unsupported("(non-empty)");
  } else if (k == "response_format") {
    if (!v.is_object()) wrong_type(k, v, "an object");
    auto t = v.find("type");
    if (t == v.end() || !t->is_string() || t->get<std::string>() != "text" || v.size() != 1)
      unsupported("other than {\"type\": \"text\"}");
  } else if (k == "tools" || k == "functions") {
    if (!v.is_array()) wrong_type(k, v, "an array");
    if (!v.empty()) unsupported("(tool calls)");
  } else if (k == "tool_choice" || k == "function_call") {
    if (!(v.is_string() && (v.get<std::string>() == "none" || v.get<std::string>() == "auto")))
      unsupported("other than 'none' or 'auto'");
  } else if (k == "parallel_tool_calls" || k == "store") {
    get_bool(v, k);
  } else if (k == "user" || k == "service_tier" || k == "prompt_cache_key" || k == "safety_identifier") {
    get_string(v, k);
  } else if (k == "metadata") {
    if (!v.is_object()) wrong_type(k, v, "an object");
  } else {
    bad(k, "Unrecognized request argument supplied: " + k);
  }
}

}  // namespace

size_t ChatRequest::n_images() const {
  size_t n = 0;
  for (const ChatMessageIn& m : messages) n += m.images.size();
  return n;
}

ChatRequest parse_chat_request(const std::string& body, const ChatLimits& lim,
                               const text::SamplingParams& defaults) {
  Json j;
  try {
    j = Json::parse(body);
  } catch (const Json::exception& e) {
    throw HttpError(400, std::string("We could not parse the JSON body of your request: ") + e.what());
  }
  if (!j.is_object())
    throw HttpError(400, std::string("The request body must be a JSON object, got ") + type_name(j) + ".");

  ChatRequest r;
  r.sampling = defaults;
  bool have_messages = false, have_stream_options = false;
  std::optional<int64_t> max_tokens, max_completion_tokens;
  for (auto& [k, v] : j.items()) {
    if (v.is_null() && k != "messages") continue;  // OpenAI takes null as "not given" for optional fields
    if (k == "model") {
      r.model = get_string(v, k);
    } else if (k == "messages") {
      have_messages = true;
      if (!v.is_array()) wrong_type(k, v, "an array");
      if (v.empty()) bad(k, "Invalid 'messages': empty array. Expected an array with at least one message.");
      if (v.size() > lim.max_messages)
        bad(k, "Invalid 'messages': at most " + std::to_string(lim.max_messages) + " messages.");
      for (size_t i = 0; i < v.size(); ++i)
        r.messages.push_back(parse_message(v[i], "messages[" + std::to_string(i) + "]"));
    } else if (k == "stream") {
      r.stream = get_bool(v, k);
    } else if (k == "stream_options") {
      if (!v.is_object()) wrong_type(k, v, "an object");
      have_stream_options = true;
      for (auto& [sk, sv] : v.items()) {
        if (sk == "include_usage")
          r.include_usage = get_bool(sv, "stream_options.include_usage");
        else if (sk == "include_obfuscation")
          get_bool(sv, "stream_options.include_obfuscation");
        else
          bad("stream_options." + sk, "Unrecognized parameter: 'stream_options." + sk + "'.");
      }
    } else if (k == "temperature") {
      r.sampling.temperature = float(get_number(v, k, 0.0, 2.0));
    } else if (k == "top_p") {
      r.sampling.top_p = float(get_number(v, k, 0.0, 1.0));
    } else if (k == "top_k") {  // extension (vLLM, llama.cpp)
      r.sampling.top_k = int(get_int(v, k, 0, 1 << 30));
    } else if (k == "min_p") {  // extension
      r.sampling.min_p = float(get_number(v, k, 0.0, 1.0));
    } else if (k == "repetition_penalty") {  // extension (vLLM's name)
      r.sampling.repetition_penalty = float(get_number(v, k, 0.01, 100.0));
    } else if (k == "max_tokens") {
      max_tokens = get_int(v, k, 1, int64_t(1) << 40);
    } else if (k == "max_completion_tokens") {
      max_completion_tokens = get_int(v, k, 1, int64_t(1) << 40);
    } else if (k == "seed") {
      r.sampling.seed = uint64_t(get_int(v, k, INT64_MIN, INT64_MAX));
      r.seed_given = true;
    } else if (k == "stop") {
      parse_stop(v, r, lim);
    } else if (k == "min_pixels") {  // extension (vLLM's mm_processor_kwargs, flattened)
      r.min_pixels = get_int(v, k, 1, int64_t(1) << 40);
    } else if (k == "max_pixels") {
      r.max_pixels = get_int(v, k, 1, int64_t(1) << 40);
    } else if (k == "max_tiles") {
      r.max_tiles = get_int(v, k, 1, 1024);
    } else if (k == "mm_processor_kwargs") {
      if (!v.is_object()) wrong_type(k, v, "an object");
      for (auto& [sk, sv] : v.items()) {
        if (sk == "min_pixels")
          r.min_pixels = get_int(sv, "mm_processor_kwargs.min_pixels", 1, int64_t(1) << 40);
        else if (sk == "max_pixels")
          r.max_pixels = get_int(sv, "mm_processor_kwargs.max_pixels", 1, int64_t(1) << 40);
        else if (sk == "max_tiles")
          r.max_tiles = get_int(sv, "mm_processor_kwargs.max_tiles", 1, 1024);
        else
          bad("mm_processor_kwargs." + sk, "Unrecognized parameter: 'mm_processor_kwargs." + sk + "'.");
      }
    } else {
      check_neutral(k, v);
    }
  }
  if (!have_messages) bad("messages", "Missing required parameter: 'messages'.");
  if (have_stream_options && !r.stream)
    bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
  r.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
  // top_p = 0 keeps only the most likely token: greedy, which the sampler spells temperature 0.
  if (r.sampling.top_p == 0.0f) {
    r.sampling.top_p = 1.0f;
    r.sampling.temperature = 0.0f;
  }
  if (r.min_pixels > 0 && r.max_pixels > 0 && r.min_pixels > r.max_pixels)
    bad("min_pixels", "min_pixels (" + std::to_string(r.min_pixels) + ") is larger than max_pixels (" +
                          std::to_string(r.max_pixels) + ").");
  if (r.n_images() > lim.max_images)
    bad("messages", "Too many images: " + std::to_string(r.n_images()) + " (this server takes at most " +
                        std::to_string(lim.max_images) + " per request).");
  return r;
}

}  // namespace iris::serve
