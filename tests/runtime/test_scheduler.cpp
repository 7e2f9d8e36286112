// Continuous batching must not change what each request gets: the scheduler's batched greedy results equal
// Engine::generate run alone. Plus the queue bound, cancellation, time limits, the image cache and stop strings.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "models/presets.h"
#include "runtime/scheduler.h"
#include "runtime/text_stream.h"
#include "test_util.h"

using namespace iris;

namespace {

// A tiny random model of a preset with a real tokenizer of ../shared/tokenizers, saved and loaded as a folder.
std::unique_ptr<runtime::Engine> make_engine(const std::string& preset, const std::string& tokenizer, uint64_t seed,
                                             float std, int64_t n_ctx) {
  std::string dir = test::temp_dir() + "/sched-" + preset;
  models::ModelConfig cfg = models::preset(preset);
  auto m = models::Vlm::create(cfg, seed, std);
  models::Vlm::save_folder(dir, cfg, m->created_weights(), DType::F32, test::shared_dir() + "/tokenizers/" + tokenizer);
  runtime::EngineOptions o;
  o.n_ctx = n_ctx;
  return runtime::Engine::load(dir, o);
}

// A tiny random LLaVA with the real Mistral tokenizer, made once.
const runtime::Engine& engine() {
  static std::unique_ptr<runtime::Engine> e = make_engine("tiny-llava", "mistral", 7, 0.08f, 1024);
  return *e;
}

vision::Image test_image(uint8_t shade) {
  vision::Image img;
  img.width = 40, img.height = 30, img.channels = 3;
  img.pixels.resize(40 * 30 * 3);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t(shade + i % 97);
  return img;
}

struct Outcome {
  runtime::GenerateResult result;
  std::string streamed, error;
};

std::future<Outcome> submit(runtime::Scheduler& s, runtime::Request r, std::shared_ptr<runtime::RequestHandle>* h = nullptr) {
  auto p = std::make_shared<std::promise<Outcome>>();
  auto out = std::make_shared<Outcome>();
  r.on_text = [out](const std::string& piece) {
    out->streamed += piece;
    return true;
  };
  r.on_done = [p, out](const runtime::GenerateResult& res, const std::string& err) {
    out->result = res;
    out->error = err;
    p->set_value(*out);
  };
  auto handle = s.submit(std::move(r));
  EXPECT_NE(handle, nullptr);
  if (h) *h = handle;
  return p->get_future();
}

}  // namespace

TEST(Scheduler, BatchedGreedyEqualsSequential) {
  const runtime::Engine& e = engine();
  const std::vector<std::string> prompts = {"Describe the picture.", "What colour is it?", "Count the shapes",
                                            "Hello"};
  std::vector<runtime::Request> reqs;
  std::vector<runtime::GenerateResult> expected;
  for (size_t i = 0; i < prompts.size(); ++i) {
    int n_img = i % 2 == 0 ? 1 : 0;
    runtime::Request r;
    r.prompt = e.tokenize_prompt(e.render_prompt({{"user", prompts[i], n_img}}));
    if (n_img) r.images.push_back({e.process_image(test_image(uint8_t(10 * i))), ""});
    r.options.max_new_tokens = 12 + int(i) * 3;
    r.options.stop_at_eos = false;
    std::vector<models::ImageFeatures> embs;
    for (auto& im : r.images) embs.push_back(e.encode_image(im.pixels));
    expected.push_back(e.generate(r.prompt, embs, r.options));
    reqs.push_back(std::move(r));
  }
  runtime::SchedulerOptions so;
  so.max_active = 3;  // fewer slots than requests: the last one joins a running batch
  runtime::Scheduler s(e, so);
  std::vector<std::future<Outcome>> futs;
  for (auto& r : reqs) futs.push_back(submit(s, r));
  for (size_t i = 0; i < futs.size(); ++i) {
    Outcome o = futs[i].get();
    EXPECT_EQ(o.error, "");
    EXPECT_EQ(o.result.tokens, expected[i].tokens) << "request " << i;
    EXPECT_EQ(o.result.text, expected[i].text);
    EXPECT_EQ(o.streamed, expected[i].text);
    EXPECT_EQ(o.result.finish_reason, "length");
  }
  EXPECT_EQ(s.stats().completed, int64_t(reqs.size()));
}

TEST(Scheduler, QueueBoundCancellationTimeLimitAndCache) {
  const runtime::Engine& e = engine();
  runtime::SchedulerOptions so;
  so.max_active = 1;
  so.max_queue = 1;
  runtime::Scheduler s(e, so);
  runtime::Request r;
  r.prompt = e.tokenize_prompt(e.render_prompt({{"user", "hi", 1}}));
  r.images.push_back({e.process_image(test_image(3)), "same-image"});
  r.options.max_new_tokens = 400;
  r.options.stop_at_eos = false;
  std::shared_ptr<runtime::RequestHandle> h1;
  auto f1 = submit(s, r, &h1);
  // Wait until the first request is running, then fill the one queue slot; the next is refused.
  while (s.stats().active == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  runtime::Request r2 = r;
  r2.options.max_new_tokens = 4;
  auto f2 = submit(s, r2);
  runtime::Request r3 = r;
  r3.on_done = [](const runtime::GenerateResult&, const std::string&) {};
  EXPECT_EQ(s.submit(r3), nullptr);
  EXPECT_EQ(s.stats().rejected, 1);
  h1->cancel();
  Outcome o1 = f1.get();
  EXPECT_EQ(o1.result.finish_reason, "cancelled");
  EXPECT_LT(o1.result.tokens.size(), 400u);
  Outcome o2 = f2.get();
  EXPECT_EQ(o2.result.tokens.size(), 4u);
  auto st = s.stats();
  EXPECT_EQ(st.image_cache_misses, 1);  // the second request's image came from the cache
  EXPECT_EQ(st.image_cache_hits, 1);
  // A time limit ends a long request.
  runtime::Request r4 = r;
  r4.time_limit = std::chrono::milliseconds(30);
  Outcome o4 = submit(s, r4).get();
  EXPECT_EQ(o4.result.finish_reason, "time_limit");
  // A prompt longer than the context is refused at submit.
  runtime::Request r5 = r;
  r5.prompt.assign(5000, 5);
  EXPECT_THROW(s.submit(r5), Error);
}

TEST(TextStream, StopStringsAreCutAndHeldBack) {
  const text::Tokenizer& tok = engine().tokenizer();
  std::vector<int32_t> ids = tok.encode("Hello world. STOP here", false);
  runtime::TextStream ts(tok, {2}, {"STOP"}, true);
  std::string out;
  bool go = true;
  for (int32_t id : ids)
    if (go) go = ts.push(id, out);
  EXPECT_FALSE(go);
  EXPECT_EQ(out, "Hello world. ");
  EXPECT_EQ(ts.text(), out);
  // EOS ends the stream and is not part of the text.
  runtime::TextStream t2(tok, {2}, {}, true);
  std::string o2;
  EXPECT_TRUE(t2.push(ids[0], o2));
  EXPECT_FALSE(t2.push(2, o2));
  EXPECT_EQ(t2.tokens().size(), 1u);
  // Without a stop, the held-back prefix ("ST" could start "STOP") is released at the end.
  std::vector<int32_t> ids3 = tok.encode("go ST", false);
  runtime::TextStream t3(tok, {2}, {"STOP"}, true);
  std::string o3;
  for (int32_t id : ids3) t3.push(id, o3);
  t3.finish(o3);
  EXPECT_EQ(o3, "go ST");
}

// The same on Qwen2-VL, whose sequences decode at M-RoPE positions that differ from their cache lengths (each
// image takes fewer positions than tokens, by its size): batched results equal each request run alone.
TEST(Scheduler, QwenBatchedGreedyEqualsSequential) {
  static std::unique_ptr<runtime::Engine> e = make_engine("qwen2-vl-tiny", "qwen2", 5, 0.1f, 512);
  const int sizes[3][2] = {{40, 30}, {120, 60}, {60, 200}};  // 4, 8 and 14 image tokens
  std::vector<runtime::Request> reqs;
  std::vector<runtime::GenerateResult> expected;
  for (int i = 0; i < 4; ++i) {
    runtime::Request r;
    std::vector<models::ImagePixels> px;
    if (i < 3) {
      vision::Image img = vision::Image::zeros(sizes[i][0], sizes[i][1], 3);
      for (size_t k = 0; k < img.pixels.size(); ++k) img.pixels[k] = uint8_t(20 * i + k % 89);
      px.push_back(e->process_image(img));
      r.images.push_back({px.back(), ""});
    }
    r.prompt = e->tokenize_prompt(e->render_prompt({{"user", "What is it? " + std::to_string(i), int(px.size())}}), px);
    r.options.max_new_tokens = 10 + 3 * i;
    r.options.stop_at_eos = false;
    std::vector<models::ImageFeatures> embs;
    for (const auto& p : px) embs.push_back(e->encode_image(p));
    expected.push_back(e->generate(r.prompt, embs, r.options));
    reqs.push_back(std::move(r));
  }
  runtime::SchedulerOptions so;
  so.max_active = 3;
  runtime::Scheduler s(*e, so);
  std::vector<std::future<Outcome>> futs;
  for (auto& r : reqs) futs.push_back(submit(s, r));
  for (size_t i = 0; i < futs.size(); ++i) {
    Outcome o = futs[i].get();
    EXPECT_EQ(o.error, "");
    EXPECT_EQ(o.result.tokens, expected[i].tokens) << "request " << i;
  }
}
