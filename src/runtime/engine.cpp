// Prompt building and the generation loop.
#include "runtime/engine.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "io/file.h"
#include "runtime/text_stream.h"
#include "text/jinja.h"

namespace iris::runtime {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

namespace {

text::SamplingParams read_generation_config(const std::string& dir) {
  text::SamplingParams p;
  const fs::path f = fs::path(dir) / "generation_config.json";
  if (!fs::exists(f)) return p;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::read_file(f.string()));
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(f.string(), ": invalid JSON: ", e.what()));
  }
  IRIS_CHECK(j.is_object(), f.string(), ": expected a JSON object");
  auto num = [&](const char* k, double def) {
    if (!j.contains(k) || j[k].is_null()) return def;
    IRIS_CHECK(j[k].is_number(), f.string(), ": ", k, " must be a number, got ", j[k].dump());
    return j[k].get<double>();
  };
  const bool do_sample = j.contains("do_sample") && j["do_sample"].is_boolean() && j["do_sample"].get<bool>();
  // Hugging Face applies the penalty to every earlier token (prompt included), sampling or not.
  p.repetition_penalty = float(num("repetition_penalty", 1.0));
  p.repeat_last_n = -1;
  if (do_sample) {
    p.temperature = float(num("temperature", 1.0));
    p.top_k = int(num("top_k", 50));
    p.top_p = float(num("top_p", 1.0));
  }
  try {
    text::validate(p);
  } catch (const Error& e) {
    throw Error(str_cat(f.string(), ": ", e.what()));
  }
  return p;
}

}  // namespace

std::unique_ptr<Engine> Engine::load(const std::string& dir, const EngineOptions& opt) {
  auto e = std::make_unique<Engine>();
  e->model_ = models::Vlm::load(dir, opt.load);
  if (const auto& unused = e->model_->unused_tensors(); !unused.empty())  // as llama.cpp's loader reports them
    std::fprintf(stderr, "warning: %s: %zu tensor(s) of the checkpoint are not used by %s (first: %s)\n", dir.c_str(),
                 unused.size(), e->model_->config().architecture_name().c_str(), unused.front().c_str());
  if (opt.on_model_loaded) opt.on_model_loaded(*e->model_);
  const models::LlamaConfig& tc = e->model_->config().text();
  e->n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : std::min<int64_t>(tc.max_position_embeddings, 4096);
  IRIS_CHECK(e->n_ctx_ <= tc.max_position_embeddings, dir, ": a context of ", e->n_ctx_,
             " tokens is longer than the model's max_position_embeddings (", tc.max_position_embeddings, ")");
  e->dir_ = dir;
  e->process_ = opt.process;
  e->gen_defaults_ = read_generation_config(dir);
  // A folder without a tokenizer still runs from token ids (iris forward --input-ids).
  if (fs::exists(fs::path(dir) / "tokenizer.json")) {
    e->tok_ = text::Tokenizer::from_dir(dir);
    e->chat_template_ = e->tok_->chat_template();
  }
  if (e->model_->has_vision()) {
    const models::ImageProcessor& p = e->model_->processor();
    e->image_token_ = p.image_token_id();
    if (e->tok_) {
      auto existing = e->tok_->token_to_id(p.image_token());
      if (!existing)
        e->tok_->add_special_token(p.image_token(), e->image_token_);
      else
        IRIS_CHECK(*existing == e->image_token_, dir, ": the tokenizer's ", p.image_token(), " is id ", *existing,
                   " but config.json's image token id is ", e->image_token_);
    }
    if (e->chat_template_.empty()) e->chat_template_ = p.default_chat_template();
  }
  return e;
}

std::vector<int32_t> Engine::eos_ids() const {
  std::vector<int32_t> eos = tokenizer().eos_ids();
  for (int e : model_->config().text().eos_token_ids)
    if (std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
  return eos;
}

const text::Tokenizer& Engine::tokenizer() const {
  IRIS_CHECK(tok_.has_value(), dir_, ": no tokenizer.json in the model folder");
  return *tok_;
}

std::string Engine::render_prompt(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  const text::Tokenizer& tok = tokenizer();
  if (chat_template_.empty()) {  // a text model without a template: the user's text as it is
    std::string out;
    for (const ChatMessage& m : messages) {
      IRIS_CHECK(m.n_images == 0, "this model has no vision tower: it cannot take an image");
      out += m.text;
    }
    return out;
  }
  nlohmann::json msgs = nlohmann::json::array();
  for (const ChatMessage& m : messages) {
    // Processor templates (VLMs) iterate over content parts; tokenizer templates of text models expect a string.
    if (!model_->has_vision()) {
      IRIS_CHECK(m.n_images == 0, "this model has no vision tower: it cannot take an image");
      msgs.push_back({{"role", m.role}, {"content", m.text}});
      continue;
    }
    nlohmann::json content = nlohmann::json::array();
    for (int i = 0; i < m.n_images; ++i) content.push_back({{"type", "image"}});
    content.push_back({{"type", "text"}, {"text", m.text}});
    msgs.push_back({{"role", m.role}, {"content", content}});
  }
  nlohmann::json ctx{{"messages", msgs},
                     {"add_generation_prompt", add_generation_prompt},
                     {"bos_token", tok.bos_token()},
                     {"eos_token", tok.eos_token()}};
  return text::ChatTemplate(chat_template_).render(ctx);
}

namespace {

// Encodes a rendered prompt, adding BOS unless the text already starts with it (templates that write bos_token).
std::vector<int32_t> encode_with_bos(const text::Tokenizer& tok, const std::string& text) {
  const bool add_special = tok.bos_token().empty() || text.compare(0, tok.bos_token().size(), tok.bos_token()) != 0;
  return tok.encode(text, add_special);
}

}  // namespace

std::vector<int32_t> Engine::tokenize_prompt(const std::string& prompt, const std::vector<int64_t>& image_tokens) const {
  const text::Tokenizer& tok = tokenizer();
  std::vector<int32_t> ids = encode_with_bos(tok, prompt);
  if (image_token_ < 0) return ids;
  const int64_t fixed = model_->processor().fixed_tokens();
  std::vector<int32_t> out;
  size_t k = 0;
  for (int32_t id : ids) {
    if (id != image_token_) {
      out.push_back(id);
      continue;
    }
    // Families whose images expand into markers (Idefics3's tiles) need the images themselves (the overload
    // below), not just their token counts.
    IRIS_CHECK(!model_->processor().expands_with_markers(), "this model's image prompts depend on each image's ",
               "tiles: expand them from the processed images");
    IRIS_CHECK(k < image_tokens.size() || (image_tokens.empty() && fixed > 0), "the prompt has more images (",
               k + 1, "+) than were given (", image_tokens.size(), ")");
    const int64_t n = image_tokens.empty() ? fixed : image_tokens[k];
    out.insert(out.end(), size_t(n), id);
    ++k;
  }
  IRIS_CHECK(image_tokens.empty() || k == image_tokens.size(), "the prompt has ", k, " image(s) but ",
             image_tokens.size(), " were given");
  return out;
}

std::vector<int32_t> Engine::tokenize_prompt(const std::string& prompt,
                                             const std::vector<models::ImagePixels>& images) const {
  if (model_->has_vision() && model_->processor().expands_with_markers()) {
    // As the Hugging Face processor does: each image token in the text becomes the image's expansion (markers and
    // image tokens), then the whole text is tokenized.
    const models::ImageProcessor& p = model_->processor();
    const text::Tokenizer& tok = tokenizer();
    const std::string token = p.image_token();
    std::string text;
    size_t pos = 0, k = 0;
    int64_t want = 0;
    for (size_t at; (at = prompt.find(token, pos)) != std::string::npos; pos = at + token.size(), ++k) {
      IRIS_CHECK(k < images.size(), "the prompt has more images (", k + 1, "+) than were given (", images.size(), ")");
      for (const std::string& m : p.marker_tokens(images[k]))
        IRIS_CHECK(tok.token_to_id(m).has_value(), "the tokenizer has no ", m, " token, which ",
                   model_->config().architecture_name(), " image prompts need");
      text += prompt.substr(pos, at - pos) + p.expand_image(images[k]);
      want += p.tokens_for(images[k]);
    }
    text += prompt.substr(pos);
    IRIS_CHECK(k == images.size(), "the prompt has ", k, " image(s) but ", images.size(), " were given");
    std::vector<int32_t> ids = encode_with_bos(tok, text);
    IRIS_CHECK(std::count(ids.begin(), ids.end(), image_token_) == want, "the expanded prompt has ",
               std::count(ids.begin(), ids.end(), image_token_), " image tokens, the images need ", want);
    return ids;
  }
  std::vector<int64_t> counts;
  for (const auto& px : images) counts.push_back(model_->processor().tokens_for(px));
  return tokenize_prompt(prompt, counts);
}

models::ImagePixels Engine::process_image(const vision::Image& img, const models::ProcessOptions* opt) const {
  models::ProcessOptions o = process_;
  if (opt) {
    if (opt->min_pixels > 0) o.min_pixels = opt->min_pixels;
    if (opt->max_pixels > 0) o.max_pixels = opt->max_pixels;
    if (opt->max_tiles > 0) o.max_tiles = opt->max_tiles;
    o.pad_to_square = o.pad_to_square || opt->pad_to_square;
  }
  return model_->processor().process(img, o);
}

models::ImageFeatures Engine::encode_image(const models::ImagePixels& px) const { return model_->encode_image(px); }

GenerateResult Engine::generate(const std::vector<int32_t>& prompt, const std::vector<models::ImageFeatures>& images,
                                const GenerateOptions& opt,
                                const std::function<bool(const std::string&)>& on_text) const {
  const text::Tokenizer& tok = tokenizer();
  GenerateResult r;
  const int64_t S = int64_t(prompt.size());
  IRIS_CHECK(S > 0, "the prompt is empty");
  IRIS_CHECK(S < n_ctx_, "the prompt has ", S, " tokens but the context holds ", n_ctx_,
             " (raise it with -c / --ctx-size, up to max_position_embeddings ",
             model_->config().text().max_position_embeddings, ")");
  Session session(*model_, n_ctx_);
  const models::PromptInput in = model_->prepare_prompt(prompt, images);
  auto t0 = Clock::now();
  std::vector<float> logits = session.prefill(in);
  r.timings.prefill_ms = ms_since(t0);
  r.timings.prompt_tokens = S;

  text::Sampler sampler(opt.sampling);
  TextStream stream(tok, eos_ids(), opt.stop, opt.stop_at_eos);
  std::vector<int32_t> history(prompt);
  r.finish_reason = "length";
  auto t1 = Clock::now();
  const int64_t limit = opt.max_new_tokens < 0 ? n_ctx_ - S : std::min<int64_t>(opt.max_new_tokens, n_ctx_ - S);
  std::string piece;
  for (int64_t i = 0; i < limit; ++i) {
    int32_t id = sampler.sample(logits.data(), int64_t(logits.size()), history);
    history.push_back(id);
    piece.clear();
    bool go_on = stream.push(id, piece);
    if (!piece.empty() && on_text && !on_text(piece)) go_on = false;
    if (!go_on) {
      r.finish_reason = "stop";
      break;
    }
    if (i + 1 < limit) logits = session.decode(id);
  }
  if (r.finish_reason == "length") {
    piece.clear();
    stream.finish(piece);
    if (!piece.empty() && on_text) on_text(piece);
  }
  r.tokens = stream.tokens();
  r.text = stream.text();
  r.timings.decode_ms = ms_since(t1);
  r.timings.generated_tokens = int64_t(r.tokens.size());
  return r;
}

}  // namespace iris::runtime
