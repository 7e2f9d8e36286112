// Continuous batching: one scheduler thread owns all compute. Requests wait in a bounded queue; at each step the
// scheduler admits waiting requests (encoding their images through the image-embedding cache, then prefilling),
// and advances every active request by one token in a single batched decode (the weights are streamed once for
// all of them). Requests finish on EOS, a stop string, max tokens, the context limit, cancellation or their time
// limit. Callbacks run on the scheduler thread and must be quick (queue the text, don't block).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "runtime/engine.h"
#include "runtime/image_cache.h"

namespace iris::runtime {

struct SchedulerOptions {
  int max_active = 4;                  // requests decoded together (--parallel)
  int max_queue = 64;                  // waiting requests beyond which submit() refuses
  int64_t n_ctx = 0;                   // per-request context (0: the engine's)
  size_t image_cache_bytes = 256 << 20;  // image-embedding cache budget
};

struct ImageInput {
  models::ImagePixels pixels;  // processed by the model's image processor (Engine::process_image)
  std::string hash;  // cache key: content hash of the encoded bytes and the processing settings; empty: no caching
};

struct Request {
  std::vector<int32_t> prompt;       // image tokens already expanded (Engine::tokenize_prompt)
  std::vector<ImageInput> images;    // in the order of the image tokens
  GenerateOptions options;
  std::chrono::milliseconds time_limit{0};  // 0: none; on expiry finish_reason is "time_limit"
  // Each newly completed piece of text; return false to cancel.
  std::function<bool(const std::string& piece)> on_text;
  // Called exactly once at the end (also after cancellation); error is non-empty when the request failed.
  std::function<void(const GenerateResult& result, const std::string& error)> on_done;
};

class RequestHandle {
 public:
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  std::atomic<bool> cancelled_{false};
};

struct SchedulerStats {
  int64_t queued = 0, active = 0, completed = 0, rejected = 0;
  int64_t image_cache_hits = 0, image_cache_misses = 0;
};

class Scheduler {
 public:
  Scheduler(const Engine& engine, const SchedulerOptions& opt);
  ~Scheduler();  // cancels everything, joins the thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request; nullptr when the queue is full (answer 429/503). Validates the prompt length against the
  // context first (throws iris::Error: answer 400).
  std::shared_ptr<RequestHandle> submit(Request r);
  SchedulerStats stats() const;
  const Engine& engine() const { return engine_; }

 private:
  struct Active;
  void loop();
  void admit(std::unique_ptr<Active>& a);
  void step();

  const Engine& engine_;
  SchedulerOptions opt_;
  ImageCache cache_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Active>> queue_;
  std::vector<std::unique_ptr<Active>> active_;
  bool stop_ = false;
  SchedulerStats stats_;
  std::thread thread_;
};

}  // namespace iris::runtime
