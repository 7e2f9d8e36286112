// The OpenAI-compatible HTTP server: POST /v1/chat/completions (plain and streamed), GET /v1/models, GET
// /health and the chat page at /. Requests are validated here and handed to the runtime's Scheduler, which
// batches generation across requests; this layer only speaks HTTP (auth, limits, errors as OpenAI's error
// object).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/scheduler.h"
#include "serve/chat_request.h"
#include "serve/images.h"

namespace iris::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                // 0: any free port (bind() returns it)
  std::string api_key;            // empty: no authentication
  std::string model_id = "iris";  // the name /v1/models lists and responses carry
  size_t max_body_bytes = 32u << 20;
  ChatLimits chat;
  text::SamplingParams sampling;  // defaults for the fields a request leaves out (--temp, --top-p, ...)
  ImageSourceOptions images;
  bool image_cache = true;           // send content hashes so the scheduler's cache can skip repeated images
  vision::DecodeOptions decode;      // pixel limit (checked before decoding), EXIF orientation
  int64_t default_max_tokens = 512;  // when a request names none (always capped by the context)
  int64_t max_tokens_limit = 0;      // requests asking for more get a 400; 0: the context is the only limit
  std::chrono::milliseconds time_limit{600'000};  // per request, queue wait included
  bool ignore_eos = false;   // generate past EOS until max_tokens, a stop string or the time limit (llama.cpp's --ignore-eos)
  int http_threads = 32;     // each open connection holds one: size it for active + queued requests
  bool log_requests = true;  // one line per request on stderr
};

class Server {
 public:
  Server(runtime::Scheduler& scheduler, ServeOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; returns the port. Throws iris::Error when the address cannot be bound.
  int bind();
  // Serves until stop(). Requests still running when it returns are cancelled.
  void run();
  // Thread-safe; also cancels requests in flight.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iris::serve
