// iris run: answer a prompt (about zero or more images), streaming the answer to stdout.
#include <cstdio>

#include "cli/common.h"

namespace iris::cli {

Runner add_run(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    SamplingFlags sampling;
    std::vector<std::string> images;
    std::string prompt, system;
    int n_predict = 256;
    bool timings = false, verbose_prompt = false, raw = false;
  };
  auto o = std::make_shared<Opts>();
  o->model.add(app);
  o->sampling.add(app);
  app.add_option("--image", o->images, "image file (JPEG or PNG); repeat for several images");
  app.add_option("-p,--prompt", o->prompt, "the question or instruction")->required();
  app.add_option("--system", o->system, "system message");
  app.add_option("-n,--n-predict", o->n_predict, "tokens to generate at most (-1: until EOS or the context is full)");
  app.add_flag("--timings", o->timings,
               "print image-encode ms and image tokens, prefill and decode tokens/s to stderr");
  app.add_flag("--verbose-prompt", o->verbose_prompt, "print the rendered prompt and its token count to stderr");
  app.add_flag("--raw", o->raw, "use the prompt as it is, without the chat template (write <image> where images go)");
  return [o] {
    o->model.apply_threads();
    o->model.resolve();
    auto engine = runtime::Engine::load(o->model.model, o->model.engine_options());
    std::vector<vision::Image> imgs;
    vision::DecodeOptions dopt = o->model.engine_options().decode;
    for (const std::string& path : o->images) imgs.push_back(vision::load_image(path, dopt));
    std::string prompt;
    if (o->raw) {
      prompt = o->prompt;
    } else {
      std::vector<runtime::ChatMessage> msgs;
      if (!o->system.empty()) msgs.push_back({"system", o->system, 0});
      msgs.push_back({"user", o->prompt, int(imgs.size())});
      prompt = engine->render_prompt(msgs);
    }
    std::vector<models::ImagePixels> pixels;
    for (const vision::Image& img : imgs) pixels.push_back(engine->process_image(img));
    std::vector<int32_t> ids = engine->tokenize_prompt(prompt, pixels);
    if (o->verbose_prompt) std::fprintf(stderr, "prompt (%zu tokens):\n%s\n", ids.size(), prompt.c_str());
    IRIS_CHECK(int64_t(ids.size()) < engine->n_ctx(), "the prompt has ", ids.size(), " tokens (images included) but "
               "the context holds ", engine->n_ctx(), " (raise it with -c, or lower --max-pixels)");
    auto t0 = std::chrono::steady_clock::now();
    std::vector<models::ImageFeatures> embs;
    for (const models::ImagePixels& px : pixels) embs.push_back(engine->encode_image(px));
    double enc_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    runtime::GenerateOptions g;
    g.max_new_tokens = o->n_predict;
    g.sampling = o->sampling.resolve(engine->generation_defaults());
    runtime::GenerateResult r = engine->generate(ids, embs, g, [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    if (o->timings) {
      const auto& t = r.timings;
      int64_t image_tokens = 0;
      for (const auto& e : embs) image_tokens += e.n_tokens();
      std::fprintf(stderr, "image encode: %.1f ms (%zu image%s, %lld image tokens)\n", enc_ms, imgs.size(),
                   imgs.size() == 1 ? "" : "s", (long long)image_tokens);
      std::fprintf(stderr, "prefill: %lld tokens in %.1f ms (%.1f tok/s)\n", (long long)t.prompt_tokens, t.prefill_ms,
                   t.prefill_ms > 0 ? 1000.0 * double(t.prompt_tokens) / t.prefill_ms : 0.0);
      // The first generated token comes from the prefill's logits; decode steps = tokens - 1.
      int64_t steps = std::max<int64_t>(t.generated_tokens - 1, 0);
      std::fprintf(stderr, "decode: %lld tokens in %.1f ms (%.1f tok/s), finish: %s\n", (long long)t.generated_tokens,
                   t.decode_ms, t.decode_ms > 0 ? 1000.0 * double(steps) / t.decode_ms : 0.0, r.finish_reason.c_str());
    }
    return 0;
  };
}

}  // namespace iris::cli
