// The body of POST /v1/chat/completions, parsed and validated as OpenAI defines it: messages of text and
// image_url parts, sampling fields, stop strings, streaming options. Every violation is an HttpError(400)
// naming the field; fields OpenAI defines that iris does not implement are accepted only at their neutral
// values, and unknown fields are refused, as OpenAI refuses them.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "text/sampler.h"

namespace iris::serve {

struct ChatLimits {
  size_t max_messages = 256;
  size_t max_images = 8;        // per request
  size_t max_stop = 4;          // OpenAI's limit on stop strings
  size_t max_stop_bytes = 256;  // per stop string
};

struct ChatImageRef {
  std::string url;    // data URL, http(s) URL or local path (resolved later, see images.h)
  std::string param;  // the field it came from, for errors: "messages[0].content[1].image_url"
};

struct ChatMessageIn {
  std::string role;  // "system" (also for OpenAI's "developer"), "user" or "assistant"
  std::string text;  // text parts joined with "\n"
  std::vector<ChatImageRef> images;
};

struct ChatRequest {
  std::string model;  // as the client named it (iris serves one model whatever the name)
  std::vector<ChatMessageIn> messages;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  std::optional<int64_t> max_tokens;  // max_completion_tokens, else max_tokens
  text::SamplingParams sampling;  // temperature, top_p, seed (+ extensions top_k, min_p, repetition_penalty)
  bool seed_given = false;
  std::vector<std::string> stop;
  // Per-request pixel budget of each image (Qwen2-VL's processor), as vLLM's mm_processor_kwargs: top-level
  // "min_pixels" / "max_pixels" or inside "mm_processor_kwargs"; 0: the model's.
  int64_t min_pixels = 0, max_pixels = 0;
  int64_t max_tiles = 0;  // Idefics3 / SmolVLM: "max_tiles" or mm_processor_kwargs.max_tiles; 0: the model's

  size_t n_images() const;
};

// Throws HttpError(400) on malformed JSON or any invalid field. Sampling fields the request leaves out keep
// the values of `defaults` (the server's --temp, --top-p, ...).
ChatRequest parse_chat_request(const std::string& body, const ChatLimits& limits = {},
                               const text::SamplingParams& defaults = {});

}  // namespace iris::serve
