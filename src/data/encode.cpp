// Conversation -> (ids, labels): rendering, answer ranges, prefix-checked token boundaries, image expansion.
#include "data/encode.h"

#include <algorithm>
#include <utility>

#include "text/jinja.h"

namespace iris::data {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool is_prefix_of(const std::vector<int32_t>& p, const std::vector<int32_t>& whole) {
  return p.size() <= whole.size() && std::equal(p.begin(), p.end(), whole.begin());
}

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

bool has_token(const text::Tokenizer& tok, int32_t id) {
  if (id >= tok.vocab_size()) return false;
  try {
    tok.id_to_token(id);
    return true;
  } catch (const iris::Error&) {
    return false;
  }
}

// Boundaries this many code points away from an inconsistent one are tried before giving up.
constexpr int kMaxBoundaryShift = 32;

}  // namespace

ConversationEncoder::ConversationEncoder(const PromptFormat& fmt) : fmt_(fmt), tok_(*[&] {
  IRIS_CHECK(fmt.tok != nullptr, "data: PromptFormat needs a tokenizer");
  return fmt.tok;
}()) {
  IRIS_CHECK(fmt_.image_tokens_per_image >= 0, "data: image_tokens_per_image must be >= 0, got ",
             fmt_.image_tokens_per_image);
  if (fmt_.image_token >= 0) {
    auto existing = tok_.token_to_id("<image>");
    if (existing) {
      IRIS_CHECK(*existing == fmt_.image_token, tok_.source(), ": the tokenizer's <image> is id ", *existing,
                 " but the image token is ", fmt_.image_token);
    } else if (has_token(tok_, fmt_.image_token)) {
      // The image token is a token of its own (Qwen2-VL's <|image_pad|>): templates write that token.
      IRIS_CHECK(!fmt_.chat_template.empty(), tok_.source(), ": LLaVA-1.5's format writes <image>, but the ",
                 "tokenizer has no such token and the image token ", fmt_.image_token, " is '",
                 tok_.id_to_token(fmt_.image_token), "'");
    } else {  // as runtime::Engine does: "<image>" splits out of the text as the model's image token
      tok_.add_special_token("<image>", fmt_.image_token);
    }
  }
  if (!fmt_.chat_template.empty()) tmpl_ = std::make_unique<text::ChatTemplate>(fmt_.chat_template);
  eos_ = fmt_.eos_ids.empty() ? tok_.eos_ids() : fmt_.eos_ids;
}

ConversationEncoder::~ConversationEncoder() = default;
ConversationEncoder::ConversationEncoder(ConversationEncoder&&) noexcept = default;
ConversationEncoder& ConversationEncoder::operator=(ConversationEncoder&&) noexcept = default;

bool ConversationEncoder::is_eos(int32_t id) const { return std::find(eos_.begin(), eos_.end(), id) != eos_.end(); }

std::vector<text::ChatMessage> ConversationEncoder::messages(const Sample& s) const {
  std::vector<text::ChatMessage> msgs;
  bool has_system = std::any_of(s.turns.begin(), s.turns.end(), [](const Turn& t) { return t.role == "system"; });
  if (!has_system && !fmt_.default_system.empty()) msgs.push_back({"system", fmt_.default_system, 0});
  for (const Turn& t : s.turns) msgs.push_back({t.role, t.text, t.n_images});
  return msgs;
}

std::string ConversationEncoder::render(const std::vector<text::ChatMessage>& messages,
                                        bool add_generation_prompt) const {
  if (!tmpl_) return text::render_llava15(messages, tok_.eos_token(), add_generation_prompt);
  return text::render_chat(*tmpl_, messages, add_generation_prompt, tok_.bos_token(), tok_.eos_token());
}

int64_t ConversationEncoder::image_token_count(const std::vector<int64_t>& image_tokens, size_t k) const {
  if (k < image_tokens.size()) return image_tokens[k];
  if (fmt_.image_tokens_per_image > 0 && image_tokens.empty()) return fmt_.image_tokens_per_image;
  throw DataError(skip_reason::kImageMismatch, str_cat("image ", k, " has no token count (", image_tokens.size(),
                                                       " image(s) processed)"));
}

std::vector<int32_t> ConversationEncoder::tokenize(const std::string& prompt,
                                                   const std::vector<int64_t>& image_tokens) const {
  const std::string& bos = tok_.bos_token();
  std::vector<int32_t> ids = tok_.encode(prompt, bos.empty() || !starts_with(prompt, bos));
  if (fmt_.image_token < 0) return ids;
  std::vector<int32_t> out;
  out.reserve(ids.size());
  size_t k = 0;
  for (int32_t id : ids) {
    if (id == fmt_.image_token)
      out.insert(out.end(), size_t(image_token_count(image_tokens, k++)), id);
    else
      out.push_back(id);
  }
  return out;
}

// Byte ranges of the answers in `full` (a template's rendering without generation prompt), one per assistant
// message: from the end of the prompt inference would send (when that prompt is a prefix of full) to the end
// of the answer text, plus the EOS string when it follows directly.
text::Spans ConversationEncoder::answer_spans(const std::vector<text::ChatMessage>& msgs, const std::string& full,
                                              const text::Spans& generation) const {
  const size_t n_assistant =
      size_t(std::count_if(msgs.begin(), msgs.end(), [](const text::ChatMessage& m) { return m.role == "assistant"; }));
  const bool use_generation = generation.size() == n_assistant;
  const std::string& eos = tok_.eos_token();
  text::Spans spans;
  size_t search_from = 0, gi = 0;
  for (size_t k = 0; k < msgs.size(); ++k) {
    if (msgs[k].role != "assistant") continue;
    const std::vector<text::ChatMessage> before(msgs.begin(), msgs.begin() + long(k));
    size_t start = std::string::npos;
    try {
      std::string prompt = text::render_chat(*tmpl_, before, true, tok_.bos_token(), eos);
      if (starts_with(full, prompt) && prompt.size() >= search_from) start = prompt.size();
    } catch (const iris::Error&) {
      // e.g. a template that cannot render a prompt with no user message: locate the answer in the text
    }
    const size_t from = start != std::string::npos ? start : search_from;
    size_t cb = 0, ce = 0;
    if (use_generation) {
      cb = generation[gi].first;
      ce = generation[gi].second;
      ++gi;
    } else {
      const std::string& answer = msgs[k].text;
      size_t pos = full.find(answer, from);
      size_t len = answer.size();
      if (pos == std::string::npos) {  // templates often trim the content
        std::string t = strip(answer);
        pos = full.find(t, from);
        len = t.size();
      }
      if (pos != std::string::npos) {
        cb = pos;
        ce = pos + len;
      } else {  // the template rewrote the answer: supervise this message's whole rendering
        std::vector<text::ChatMessage> upto(msgs.begin(), msgs.begin() + long(k) + 1);
        std::string with = text::render_chat(*tmpl_, upto, false, tok_.bos_token(), eos);
        if (!starts_with(full, with) || with.size() < from)
          throw DataError(skip_reason::kTemplate,
                          str_cat("cannot find assistant message ", k, " in the template's rendering"));
        cb = from;
        ce = with.size();
      }
    }
    const size_t b = start != std::string::npos && start <= cb ? start : cb;
    size_t e = std::max(ce, b);
    if (!eos.empty() && full.compare(e, eos.size(), eos) == 0) e += eos.size();
    spans.emplace_back(b, e);
    search_from = e;
  }
  return spans;
}

// The number of tokens of `core` (the tokenization of full, no special tokens added) that cover full[0, pos).
// When the tokenization of that prefix is not a prefix of core, the nearest code-point position whose prefix is
// consistent is used (ties: earlier for a start, later for an end, so answers are covered whole).
size_t ConversationEncoder::token_boundary(const std::string& full, size_t pos, const std::vector<int32_t>& core,
                                           bool start, int* adjusted) const {
  if (pos == 0) return 0;
  if (pos >= full.size()) return core.size();
  std::vector<int32_t> p = tok_.encode(std::string_view(full).substr(0, pos), false);
  if (is_prefix_of(p, core)) return p.size();
  ++*adjusted;
  const size_t lcp = size_t(std::mismatch(p.begin(), p.end(), core.begin(), core.end()).first - p.begin());
  size_t back = pos, fwd = pos;
  for (int d = 0; d < kMaxBoundaryShift; ++d) {
    if (back > 0)
      do --back;
      while (back > 0 && is_continuation(static_cast<unsigned char>(full[back])));
    if (fwd < full.size())
      do ++fwd;
      while (fwd < full.size() && is_continuation(static_cast<unsigned char>(full[fwd])));
    const size_t cands[2] = {start ? back : fwd, start ? fwd : back};
    for (size_t cand : cands) {
      if (cand == 0) return 0;
      if (cand >= full.size()) return core.size();
      std::vector<int32_t> q = tok_.encode(std::string_view(full).substr(0, cand), false);
      if (is_prefix_of(q, core)) return q.size();
    }
  }
  return lcp;  // the tokens both tokenizations agree on
}

Encoded ConversationEncoder::encode(const Sample& s, const std::vector<int64_t>& image_tokens) const {
  return encode(messages(s), image_tokens);
}

Encoded ConversationEncoder::encode(const std::vector<text::ChatMessage>& msgs,
                                    const std::vector<int64_t>& image_tokens) const {
  int expected_images = 0;
  bool has_assistant = false;
  for (const text::ChatMessage& m : msgs) {
    expected_images += m.n_images;
    has_assistant = has_assistant || m.role == "assistant";
  }
  if (!has_assistant) throw DataError(skip_reason::kNoAssistant, "no assistant turn");
  if (expected_images > 0 && fmt_.image_token < 0)
    throw DataError(skip_reason::kImageMismatch, "the conversation has images but the model has no image token");

  std::string full;
  text::Spans spans;
  if (!tmpl_) {
    full = text::render_llava15(msgs, tok_.eos_token(), false, &spans);
  } else {
    text::Spans generation;
    try {
      full = text::render_chat(*tmpl_, msgs, false, tok_.bos_token(), tok_.eos_token(), &generation);
    } catch (const iris::Error& e) {
      throw DataError(skip_reason::kTemplate, str_cat("chat template: ", e.what()));
    }
    spans = answer_spans(msgs, full, generation);
  }

  // Tokenize once; `core` has no post-processor tokens, `ids` has them where inference adds them.
  const std::vector<int32_t> core = tok_.encode(full, false);
  const std::string& bos = tok_.bos_token();
  const bool add_special = bos.empty() || !starts_with(full, bos);
  const std::vector<int32_t> ids = add_special ? tok_.encode(full, true) : core;
  size_t lead = 0;
  while (lead + core.size() <= ids.size() && !std::equal(core.begin(), core.end(), ids.begin() + long(lead))) ++lead;
  IRIS_CHECK(lead + core.size() <= ids.size(), tok_.source(),
             ": the post-processor changed the tokens of the text (cannot align labels)");

  Encoded out;
  std::vector<int32_t> labels(ids.size(), kIgnoreIndex);
  for (const auto& [b, e] : spans) {
    size_t tb = token_boundary(full, b, core, true, &out.boundary_adjusted);
    size_t te = std::max(tb, token_boundary(full, e, core, false, &out.boundary_adjusted));
    // An end-of-turn id that follows the answer directly is part of what the model must generate.
    if (tmpl_ && te < core.size() && is_eos(core[te]) && !(te > tb && is_eos(core[te - 1]))) ++te;
    for (size_t i = tb; i < te; ++i) labels[lead + i] = core[i];
  }

  // Image placeholders: one per image, each expanded to the embedding count.
  const int found = fmt_.image_token < 0 ? 0 : int(std::count(ids.begin(), ids.end(), fmt_.image_token));
  if (found != expected_images)
    throw DataError(skip_reason::kImageMismatch, str_cat("the prompt has ", found, " image token(s) but the ",
                                                         "conversation has ", expected_images, " image(s)"));
  out.ids.reserve(ids.size());
  out.labels.reserve(out.ids.capacity());
  size_t k = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == fmt_.image_token && fmt_.image_token >= 0) {
      const size_t n_per = size_t(image_token_count(image_tokens, k++));
      out.ids.insert(out.ids.end(), n_per, ids[i]);
      out.labels.insert(out.labels.end(), n_per, kIgnoreIndex);
    } else {
      out.ids.push_back(ids[i]);
      out.labels.push_back(labels[i]);
    }
  }
  out.n_images = found;
  return out;
}

PromptFormat prompt_format_for(const text::Tokenizer& tok, int32_t image_token, int64_t image_tokens_per_image,
                               std::vector<int32_t> eos_ids) {
  PromptFormat f;
  f.tok = &tok;
  f.chat_template = tok.chat_template();
  f.image_token = image_token;
  f.image_tokens_per_image = image_tokens_per_image;
  f.eos_ids = std::move(eos_ids);
  return f;
}

Encoded encode_conversation(const Sample& s, const PromptFormat& fmt) { return ConversationEncoder(fmt).encode(s); }

int truncate_encoded(Encoded& e, int64_t max_tokens, int32_t image_token, int64_t tokens_per_image) {
  const size_t runs = size_t(std::count(e.ids.begin(), e.ids.end(), image_token));  // at least the images
  return truncate_encoded(e, max_tokens, image_token, std::vector<int64_t>(runs, std::max<int64_t>(tokens_per_image, 1)));
}

int truncate_encoded(Encoded& e, int64_t max_tokens, int32_t image_token, const std::vector<int64_t>& image_tokens) {
  IRIS_CHECK(max_tokens >= 0, "data: max_tokens must be >= 0, got ", max_tokens);
  if (int64_t(e.ids.size()) <= max_tokens) return e.n_images;
  size_t cut = size_t(max_tokens);
  int kept = 0;
  if (image_token >= 0) {
    for (size_t i = 0; i < e.ids.size();) {
      const size_t n = size_t(std::max<int64_t>(size_t(kept) < image_tokens.size() ? image_tokens[size_t(kept)] : 1, 1));
      if (e.ids[i] != image_token) {
        ++i;
        continue;
      }
      if (i >= cut) break;
      if (i + n > cut) {  // this image would be cut: drop it whole
        cut = i;
        break;
      }
      ++kept;
      i += n;
    }
  }
  e.ids.resize(cut);
  e.labels.resize(cut);
  e.n_images = kept;
  return kept;
}

}  // namespace iris::data
