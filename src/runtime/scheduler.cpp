// Continuous batching scheduler.
#include "runtime/scheduler.h"

#include <cstdio>

#include "cpu/threads.h"
#include "runtime/text_stream.h"

namespace iris::runtime {

using Clock = std::chrono::steady_clock;

struct Scheduler::Active {
  Request req;
  std::shared_ptr<RequestHandle> handle;
  Clock::time_point start;
  std::unique_ptr<Session> session;
  std::unique_ptr<text::Sampler> sampler;
  std::unique_ptr<TextStream> stream;
  std::vector<int32_t> history;
  int32_t next = -1;  // token sampled and not yet fed to the model
  int64_t limit = 0;  // tokens this request may generate
  GenerateResult result;
  bool done = false;
};

Scheduler::Scheduler(const Engine& engine, const SchedulerOptions& opt)
    : engine_(engine), opt_(opt), cache_(opt.image_cache_bytes) {
  if (opt_.n_ctx <= 0) opt_.n_ctx = engine.n_ctx();
  IRIS_CHECK(opt_.max_active >= 1 && opt_.max_queue >= 0, "scheduler: max_active must be >= 1 and max_queue >= 0");
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::shared_ptr<RequestHandle> Scheduler::submit(Request r) {
  const int64_t S = int64_t(r.prompt.size());
  IRIS_CHECK(S > 0, "the prompt is empty");
  IRIS_CHECK(S < opt_.n_ctx, "the prompt has ", S, " tokens but the context holds ", opt_.n_ctx);
  auto a = std::make_unique<Active>();
  a->req = std::move(r);
  a->handle = std::make_shared<RequestHandle>();
  a->start = Clock::now();
  auto h = a->handle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || int(queue_.size()) >= opt_.max_queue) {
      ++stats_.rejected;
      return nullptr;
    }
    queue_.push_back(std::move(a));
    stats_.queued = int64_t(queue_.size());
  }
  cv_.notify_one();
  return h;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Scheduler::admit(std::unique_ptr<Active>& a) {
  Request& r = a->req;
  const models::Vlm& m = engine_.model();
  // Images: the cache first, then the vision tower.
  std::vector<models::ImageFeatures> embs;
  auto t0 = Clock::now();
  for (const ImageInput& img : r.images) {
    std::optional<models::ImageFeatures> hit = img.hash.empty() ? std::nullopt : cache_.get(img.hash);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++(hit ? stats_.image_cache_hits : stats_.image_cache_misses);
    }
    if (hit) {
      embs.push_back(*hit);
      continue;
    }
    models::ImageFeatures e = engine_.encode_image(img.pixels);
    if (!img.hash.empty()) cache_.put(img.hash, e);
    embs.push_back(e);
  }
  a->result.timings.image_encode_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  a->result.timings.images = int(r.images.size());
  const models::PromptInput in = m.prepare_prompt(r.prompt, embs);
  a->session = std::make_unique<Session>(m, opt_.n_ctx);
  auto t1 = Clock::now();
  std::vector<float> logits = a->session->prefill(in);
  a->result.timings.prefill_ms = std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
  a->result.timings.prompt_tokens = int64_t(r.prompt.size());
  a->sampler = std::make_unique<text::Sampler>(r.options.sampling);
  a->stream = std::make_unique<TextStream>(engine_.tokenizer(), engine_.eos_ids(), r.options.stop, r.options.stop_at_eos);
  a->history = r.prompt;
  const int64_t room = opt_.n_ctx - int64_t(r.prompt.size());
  a->limit = r.options.max_new_tokens < 0 ? room : std::min<int64_t>(r.options.max_new_tokens, room);
  a->result.finish_reason = "length";
  if (a->limit <= 0) {
    a->done = true;
    return;
  }
  a->next = a->sampler->sample(logits.data(), int64_t(logits.size()), a->history);
}

void Scheduler::loop() {
  // OpenMP's thread count is per calling thread: give this one the configured count (-t), or it uses every core.
  cpu::set_num_threads(cpu::num_threads());
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !active_.empty(); });
      if (stop_) break;
    }
    // Admit waiting requests up to the batch size (one prefill each, then they join the batch).
    while (true) {
      std::unique_ptr<Active> a;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.empty() || int(active_.size()) >= opt_.max_active) break;
        a = std::move(queue_.front());
        queue_.pop_front();
        stats_.queued = int64_t(queue_.size());
      }
      std::string error;
      // A request whose time limit ran out while it waited is not prefilled.
      if (a->req.time_limit.count() > 0 && Clock::now() - a->start > a->req.time_limit) {
        a->result.finish_reason = "time_limit";
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++stats_.completed;
        }
        if (a->req.on_done) a->req.on_done(a->result, "");
        continue;
      }
      try {
        if (!a->handle->cancelled()) admit(a);
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty() || a->handle->cancelled()) {
        if (a->handle->cancelled()) a->result.finish_reason = "cancelled";
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++stats_.completed;  // counted before on_done, so a caller woken by it sees the count
        }
        if (a->req.on_done) a->req.on_done(a->result, error);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      active_.push_back(std::move(a));
      stats_.active = int64_t(active_.size());
    }
    step();
  }
  // Shutting down: everything still queued or active ends as cancelled (callbacks outside the lock).
  std::vector<std::unique_ptr<Active>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& a : active_) left.push_back(std::move(a));
    for (auto& a : queue_) left.push_back(std::move(a));
    active_.clear();
    queue_.clear();
  }
  for (auto& a : left) {
    a->result.finish_reason = "cancelled";
    if (a->req.on_done) a->req.on_done(a->result, "the server is shutting down");
  }
}

void Scheduler::step() {
  const auto now = Clock::now();
  // 1. Feed each request's pending token to its text stream; decide who continues.
  for (auto& a : active_) {
    if (a->done) continue;
    const Request& r = a->req;
    if (a->handle->cancelled()) {
      a->result.finish_reason = "cancelled";
      a->done = true;
      continue;
    }
    if (r.time_limit.count() > 0 && now - a->start > r.time_limit) {
      a->result.finish_reason = "time_limit";
      a->done = true;
      continue;
    }
    std::string piece;
    a->history.push_back(a->next);
    bool go_on = a->stream->push(a->next, piece);
    if (!piece.empty() && r.on_text && !r.on_text(piece)) {
      a->handle->cancel();
      a->result.finish_reason = "cancelled";
      a->done = true;
      continue;
    }
    if (!go_on) {
      a->result.finish_reason = "stop";
      a->done = true;
    } else if (int64_t(a->stream->tokens().size()) >= a->limit) {
      piece.clear();
      a->stream->finish(piece);
      if (!piece.empty() && r.on_text) r.on_text(piece);
      a->result.finish_reason = "length";
      a->done = true;
    }
  }
  // 2. Retire finished requests (counted before their on_done runs).
  {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t running = 0;
    for (auto& a : active_) {
      stats_.completed += a->done ? 1 : 0;
      running += a->done ? 0 : 1;
    }
    stats_.active = running;  // before on_done: a caller woken by it sees the request gone
  }
  for (auto& a : active_) {
    if (!a->done) continue;
    if (a->stream) {
      a->result.tokens = a->stream->tokens();
      a->result.text = a->stream->text();
    }
    a->result.timings.generated_tokens = int64_t(a->result.tokens.size());
    a->result.timings.decode_ms =
        std::chrono::duration<double, std::milli>(now - a->start).count() - a->result.timings.prefill_ms -
        a->result.timings.image_encode_ms;
    if (a->req.on_done) a->req.on_done(a->result, "");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& a) { return a->done; }),
                  active_.end());
    stats_.active = int64_t(active_.size());
  }
  if (active_.empty()) return;
  // 3. One batched decode step for everyone still running, then sample each one's next token.
  std::vector<Session*> sessions;
  std::vector<int32_t> tokens;
  for (auto& a : active_) {
    sessions.push_back(a->session.get());
    tokens.push_back(a->next);
  }
  std::vector<float> logits;
  try {
    logits = Session::decode_batch(sessions, tokens);
  } catch (const std::exception& e) {  // cannot happen for validated requests; fail them rather than the server
    std::vector<std::unique_ptr<Active>> failed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.completed += int64_t(active_.size());
      failed.swap(active_);
      stats_.active = 0;
    }
    for (auto& a : failed)
      if (a->req.on_done) a->req.on_done(a->result, e.what());
    return;
  }
  const int64_t V = engine_.model().text().vocab_size();
  for (size_t i = 0; i < active_.size(); ++i)
    active_[i]->next = active_[i]->sampler->sample(logits.data() + int64_t(i) * V, V, active_[i]->history);
}

}  // namespace iris::runtime
