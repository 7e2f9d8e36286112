// The Tokenizer facade: loads tokenizer.json (+ tokenizer_config.json and friends), splits added tokens out of the
// raw text (leftmost-longest, with lstrip/rstrip/single_word/normalized), runs normalizer -> pre-tokenizer -> BPE on
// the pieces between them, applies the post-processor, and decodes; plus StreamDecoder and tokenize_jsonl.
#include "text/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <istream>
#include <ostream>
#include <sstream>

#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text {

using detail::AddedToken;
using detail::AddedVocab;
using detail::Json;
using detail::Piece;
using detail::TokenMatcher;

namespace {

std::string read_text_file(const std::string& path, const char* what) {
  std::error_code ec;
  IRIS_CHECK(std::filesystem::is_regular_file(path, ec), "tokenizer: cannot open ", what, " '", path,
             "': no such file");
  std::ifstream f(path, std::ios::binary);
  IRIS_CHECK(f.good(), "tokenizer: cannot open ", what, " '", path, "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  IRIS_CHECK(!f.bad(), "tokenizer: cannot read ", what, " '", path, "'");
  return ss.str();
}

Json parse_json_file(const std::string& path, const char* what) {
  const std::string text = read_text_file(path, what);
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    throw Error(str_cat("tokenizer: malformed JSON in ", what, " '", path, "': ", e.what()));
  }
}

// A token as tokenizer_config.json writes it: a string, {"content": ...} (an AddedToken), or null.
std::string config_token(const Json& cfg, const char* key, const std::string& where) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  const Json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(str_cat(where, ": '", key, "' must be a string or an object with \"content\", got ", v.dump()));
}

// Rebuilds the lookup maps and both matchers after the token list changed.
void rebuild_added(AddedVocab& av, const detail::Normalizer* normalizer) {
  av.by_content.clear();
  av.by_id.clear();
  av.raw = TokenMatcher();
  av.normalized = TokenMatcher();
  for (size_t k = 0; k < av.tokens.size(); ++k) {
    const AddedToken& t = av.tokens[k];
    av.by_content[t.content] = k;
    av.by_id[t.id] = k;
  }
  // Index by the final position of each content, so a later duplicate replaces an earlier one.
  for (const auto& [content, k] : av.by_content) {
    const AddedToken& t = av.tokens[k];
    if (t.normalized) {
      std::string pattern = t.content;
      if (normalizer) normalizer->normalize(pattern);
      if (!pattern.empty()) av.normalized.add(pattern, int32_t(k));
    } else {
      av.raw.add(t.content, int32_t(k));
    }
  }
}

AddedToken parse_added_token(const Json& j, const std::string& where) {
  AddedToken t;
  t.content = detail::json_string(j, "content", where);
  t.special = detail::json_bool(j, "special", false, where);
  t.lstrip = detail::json_bool(j, "lstrip", false, where);
  t.rstrip = detail::json_bool(j, "rstrip", false, where);
  t.single_word = detail::json_bool(j, "single_word", false, where);
  // Special tokens default to matching the raw text; others to matching the normalized text.
  t.normalized = detail::json_bool(j, "normalized", !t.special, where);
  return t;
}

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80) --start;
  return detail::is_word_char(detail::utf8_next(s, start));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  return detail::is_word_char(detail::utf8_next(s, i));
}

// A part of the text: an added token (token >= 0, an index into AddedVocab::tokens) or text to tokenize.
struct Segment {
  size_t start, end;
  int32_t token;
};

// Splits s at the added tokens of `matcher`, as the library's AddedVocabulary::find_matches does.
void find_added(const AddedVocab& av, const TokenMatcher& matcher, std::string_view s, std::vector<Segment>& out) {
  out.clear();
  if (s.empty()) {
    out.push_back({0, 0, -1});
    return;
  }
  size_t start_offset = 0, pos = 0;
  while (!matcher.empty() && (pos = matcher.next_candidate(s, pos)) != std::string_view::npos) {
    const auto [len, k] = matcher.longest_at(s, pos);
    if (len == 0) {
      ++pos;
      continue;
    }
    const AddedToken& t = av.tokens[size_t(k)];
    size_t start = pos, stop = pos + len;
    if (t.single_word) {
      const bool start_ok = start == 0 || !ends_with_word(s.substr(0, start));
      const bool stop_ok = stop == s.size() || !starts_with_word(s.substr(stop));
      if (!start_ok || !stop_ok) {
        pos = stop;  // the match is consumed even when rejected (leftmost-longest iteration moves past it)
        continue;
      }
    }
    if (t.lstrip) {
      // Take in the whitespace before the token, but not what a previous match already took.
      size_t b = start;
      while (b > start_offset) {
        size_t c = b - 1;
        while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80) --c;
        size_t i = c;
        if (!detail::is_white_space(detail::utf8_next(s, i))) break;
        b = c;
      }
      start = b;
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t i = stop;
        if (!detail::is_white_space(detail::utf8_next(s, i))) break;
        stop = i;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, k});
    start_offset = stop;
    pos = stop;
  }
  if (start_offset != s.size()) out.push_back({start_offset, s.size(), -1});
}

}  // namespace

// ---- TokenMatcher ----

void TokenMatcher::add(std::string_view pattern, int32_t value) {
  if (pattern.empty()) return;
  first_[(unsigned char)pattern[0]] = true;
  size_t node = 0;
  for (char ch : pattern) {
    const uint8_t c = uint8_t(ch);
    auto& next = nodes_[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), c,
                               [](const std::pair<uint8_t, int32_t>& e, uint8_t v) { return e.first < v; });
    if (it != next.end() && it->first == c) {
      node = size_t(it->second);
    } else {
      const int32_t child = int32_t(nodes_.size());
      next.insert(it, {c, child});
      nodes_.emplace_back();  // may reallocate: `next` is not used after this
      node = size_t(child);
    }
  }
  nodes_[node].value = value;
}

std::pair<size_t, int32_t> TokenMatcher::longest_at(std::string_view s, size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  size_t node = 0;
  for (size_t i = pos; i < s.size(); ++i) {
    const uint8_t c = uint8_t(s[i]);
    const auto& next = nodes_[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), c,
                               [](const std::pair<uint8_t, int32_t>& e, uint8_t v) { return e.first < v; });
    if (it == next.end() || it->first != c) break;
    node = size_t(it->second);
    if (nodes_[node].value >= 0) best = {i + 1 - pos, nodes_[node].value};
  }
  return best;
}

size_t TokenMatcher::next_candidate(std::string_view s, size_t pos) const {
  for (; pos < s.size(); ++pos) {
    if (first_[(unsigned char)s[pos]]) return pos;
  }
  return std::string_view::npos;
}

// ---- Tokenizer ----

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_files(const std::string& tokenizer_json, const std::string& tokenizer_config) {
  const Json j = parse_json_file(tokenizer_json, "tokenizer.json");
  const std::string& file = tokenizer_json;
  IRIS_CHECK(j.is_object(), "tokenizer: ", file, " must hold a JSON object");
  IRIS_CHECK(j.contains("model"), "tokenizer: ", file, " has no 'model'");

  auto pipe = std::make_shared<detail::Pipeline>();
  const auto get = [&](const char* key) -> const Json& {
    static const Json null_json;
    return j.contains(key) ? j[key] : null_json;
  };
  pipe->normalizer = detail::make_normalizer(get("normalizer"), file);
  pipe->pre_tokenizer = detail::make_pre_tokenizer(get("pre_tokenizer"), file);
  pipe->model = std::make_unique<detail::BpeModel>(j["model"], file);
  pipe->post_processor = detail::make_post_processor(get("post_processor"), file);
  pipe->decoder = detail::make_decoder(get("decoder"), file);

  auto added = std::make_shared<AddedVocab>();
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    const Json& list = j["added_tokens"];
    IRIS_CHECK(list.is_array(), "tokenizer: ", file, ": 'added_tokens' must be an array");
    for (size_t k = 0; k < list.size(); ++k) {
      const std::string where = str_cat(file, ": added_tokens[", k, "]");
      AddedToken t = parse_added_token(list[k], where);
      if (t.content.empty()) continue;  // the library ignores empty tokens
      // A token already in the vocabulary keeps its vocabulary id, as in the library.
      if (auto vid = pipe->model->token_to_id(t.content)) {
        t.id = *vid;
      } else {
        const Json& id = detail::json_field(list[k], "id", where);
        IRIS_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX, where,
                   ": 'id' must be a non-negative integer, got ", id.dump());
        t.id = id.get<int32_t>();
      }
      added->tokens.push_back(std::move(t));
    }
  }

  Tokenizer tok;
  tok.source_ = tokenizer_json;
  if (!tokenizer_config.empty()) tok.apply_config(tokenizer_config, *pipe, *added);
  rebuild_added(*added, pipe->normalizer.get());
  tok.pipe_ = std::move(pipe);
  tok.added_ = std::move(added);
  return tok;
}

void Tokenizer::apply_config(const std::string& config_path, detail::Pipeline& pipe, AddedVocab& added) {
  const Json cfg = parse_json_file(config_path, "tokenizer_config.json");
  const std::string where = "tokenizer: " + config_path;
  IRIS_CHECK(cfg.is_object(), where, " must hold a JSON object");

  // Tokens declared only in the config (transformers adds them on load).
  if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
    std::unordered_map<int32_t, bool> known;
    for (const AddedToken& t : added.tokens) known[t.id] = true;
    for (const auto& [key, entry] : cfg["added_tokens_decoder"].items()) {
      const std::string w = where + ": added_tokens_decoder[" + key + "]";
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      IRIS_CHECK(id >= 0 && id < INT32_MAX, w, ": key must be a token id");
      if (known.count(int32_t(id))) continue;
      AddedToken t = parse_added_token(entry, w);
      if (t.content.empty()) continue;
      const auto vid = pipe.model->token_to_id(t.content);
      t.id = vid ? *vid : int32_t(id);
      known[t.id] = true;
      added.tokens.push_back(std::move(t));
    }
  }

  bos_token_ = config_token(cfg, "bos_token", where);
  eos_token_ = config_token(cfg, "eos_token", where);
  clean_up_default_ = detail::json_bool(cfg, "clean_up_tokenization_spaces", false, where);

  if (cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
    const Json& ct = cfg["chat_template"];
    if (ct.is_string()) {
      chat_template_ = ct.get<std::string>();
    } else if (ct.is_array()) {
      // Several named templates: the "default" one is the chat template.
      for (const Json& e : ct) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string()) {
          chat_template_ = e["template"].get<std::string>();
        }
      }
    } else {
      throw Error(str_cat(where, ": 'chat_template' must be a string or a list of {name, template}"));
    }
  }

  // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from add_bos_token/add_eos_token (BOS on,
  // EOS off by default), whatever tokenizer.json says.
  const std::string cls = cfg.value("tokenizer_class", std::string());
  const bool rebuilds = cls.rfind("LlamaTokenizer", 0) == 0 || cls.rfind("CodeLlamaTokenizer", 0) == 0 ||
                        cls.rfind("GemmaTokenizer", 0) == 0;
  if (rebuilds) {
    const bool add_bos = detail::json_bool(cfg, "add_bos_token", true, where);
    const bool add_eos = detail::json_bool(cfg, "add_eos_token", false, where);
    const auto lookup = [&](const std::string& token, const char* what) -> std::pair<std::string, int32_t> {
      IRIS_CHECK(!token.empty(), where, ": add_", what, "_token is on but there is no ", what, "_token");
      for (const AddedToken& t : added.tokens) {
        if (t.content == token) return {token, t.id};
      }
      const auto id = pipe.model->token_to_id(token);
      IRIS_CHECK(id, where, ": token '", token, "' is not in the vocabulary");
      return {token, *id};
    };
    std::optional<std::pair<std::string, int32_t>> bos, eos;
    if (add_bos) bos = lookup(bos_token_, "bos");
    if (add_eos) eos = lookup(eos_token_, "eos");
    pipe.post_processor = detail::make_bos_eos_processor(bos, eos);
  }
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  std::error_code ec;
  IRIS_CHECK(fs::is_directory(d, ec), "tokenizer: model folder '", dir, "' does not exist");
  const fs::path tj = d / "tokenizer.json";
  IRIS_CHECK(fs::is_regular_file(tj, ec), "tokenizer: no tokenizer.json in '", dir, "'");
  const fs::path tc = d / "tokenizer_config.json";
  Tokenizer tok = from_files(tj.string(), fs::is_regular_file(tc, ec) ? tc.string() : "");

  // A template file next to the config is newer than the config's own field and wins, as in transformers.
  if (const fs::path f = d / "chat_template.jinja"; fs::is_regular_file(f, ec)) {
    tok.chat_template_ = read_text_file(f.string(), "chat_template.jinja");
  } else if (const fs::path f2 = d / "chat_template.json"; fs::is_regular_file(f2, ec)) {
    const Json j = parse_json_file(f2.string(), "chat_template.json");
    IRIS_CHECK(j.is_object() && j.contains("chat_template") && j["chat_template"].is_string(), "tokenizer: ",
               f2.string(), ": expected {\"chat_template\": \"...\"}");
    tok.chat_template_ = j["chat_template"].get<std::string>();
  }
  // Instruct models often stop on several ids (Llama-3: <|end_of_text|> and <|eot_id|>).
  if (const fs::path g = d / "generation_config.json"; fs::is_regular_file(g, ec)) {
    const Json j = parse_json_file(g.string(), "generation_config.json");
    if (j.is_object() && j.contains("eos_token_id")) {
      const Json& e = j["eos_token_id"];
      if (e.is_number_integer()) tok.extra_eos_ids_.push_back(e.get<int32_t>());
      if (e.is_array()) {
        for (const Json& x : e) {
          if (x.is_number_integer()) tok.extra_eos_ids_.push_back(x.get<int32_t>());
        }
      }
    }
  }
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const size_t bad = detail::utf8_invalid_at(text);
  IRIS_CHECK(bad == std::string_view::npos, "tokenizer: input text is not valid UTF-8 at byte ", bad);
  const AddedVocab& av = *added_;
  const detail::Pipeline& pipe = *pipe_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);

  std::vector<Piece> pieces;
  const auto encode_piece = [&](std::string text_piece, bool at_start) {
    pieces.clear();
    pieces.push_back(Piece{std::move(text_piece), at_start});
    if (pipe.pre_tokenizer) pipe.pre_tokenizer->pre_tokenize(pieces);
    for (const Piece& p : pieces) pipe.model->tokenize(p.text, ids);
  };

  // 1. Added tokens are split out of the raw text; 2. each remaining piece is normalized on its own and split at
  // the normalized added tokens; 3. the rest is pre-tokenized and encoded.
  std::vector<Segment> segs, subs;
  find_added(av, av.raw, text, segs);
  for (const Segment& seg : segs) {
    if (seg.token >= 0) {
      ids.push_back(av.tokens[size_t(seg.token)].id);
      continue;
    }
    std::string s(text.substr(seg.start, seg.end - seg.start));
    const bool at_start = seg.start == 0;
    if (pipe.normalizer) pipe.normalizer->normalize(s);
    if (av.normalized.empty()) {
      encode_piece(std::move(s), at_start);
      continue;
    }
    find_added(av, av.normalized, s, subs);
    for (const Segment& sub : subs) {
      if (sub.token >= 0) ids.push_back(av.tokens[size_t(sub.token)].id);
      else encode_piece(s.substr(sub.start, sub.end - sub.start), at_start && sub.start == 0);
    }
  }
  if (add_special_tokens && pipe.post_processor) pipe.post_processor->process(ids);
  return ids;
}

std::vector<std::string> Tokenizer::tokens_of(std::string_view text, bool add_special_tokens) const {
  std::vector<std::string> out;
  for (int32_t id : encode(text, add_special_tokens)) out.push_back(id_to_token(id));
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens,
                              std::optional<bool> clean_up_spaces) const {
  const AddedVocab& av = *added_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const auto it = av.by_id.find(id); it != av.by_id.end()) {
      const AddedToken& t = av.tokens[it->second];
      if (!(skip_special_tokens && t.special)) tokens.push_back(t.content);
    } else if (const std::string* t = pipe_->model->id_to_token(id)) {
      tokens.push_back(*t);
    }
  }
  std::string text;
  if (pipe_->decoder) {
    pipe_->decoder->decode_chain(tokens);
    for (const std::string& t : tokens) text += t;
  } else {
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k) text += ' ';
      text += tokens[k];
    }
  }
  if (clean_up_spaces.value_or(clean_up_default_)) text = clean_up_tokenization(std::move(text));
  return text;
}

int32_t Tokenizer::vocab_size() const {
  int32_t n = pipe_->model->vocab_size();
  for (const AddedToken& t : added_->tokens) n = std::max(n, t.id + 1);
  return n;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = added_->by_content.find(std::string(token)); it != added_->by_content.end()) {
    return added_->tokens[it->second].id;
  }
  return pipe_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const auto it = added_->by_id.find(id); it != added_->by_id.end()) return added_->tokens[it->second].content;
  const std::string* t = pipe_->model->id_to_token(id);
  IRIS_CHECK(t, "tokenizer: no token has id ", id, " (vocabulary size ", vocab_size(), ") in ", source_);
  return *t;
}

bool Tokenizer::is_special(int32_t id) const {
  const auto it = added_->by_id.find(id);
  return it != added_->by_id.end() && added_->tokens[it->second].special;
}

std::optional<int32_t> Tokenizer::bos_id() const {
  if (!bos_token_.empty()) return token_to_id(bos_token_);
  if (pipe_->post_processor) {
    const auto pre = pipe_->post_processor->prefix_tokens();
    if (!pre.empty()) return pre.front().second;
  }
  return std::nullopt;
}

std::string Tokenizer::bos_token() const {
  if (!bos_token_.empty()) return bos_token_;
  if (pipe_->post_processor) {
    const auto pre = pipe_->post_processor->prefix_tokens();
    if (!pre.empty()) return pre.front().first;
  }
  return "";
}

std::string Tokenizer::eos_token() const { return eos_token_; }

std::vector<int32_t> Tokenizer::eos_ids() const {
  std::vector<int32_t> out;
  if (!eos_token_.empty()) {
    if (auto id = token_to_id(eos_token_)) out.push_back(*id);
  }
  for (int32_t id : extra_eos_ids_) {
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  }
  return out;
}

const std::string& Tokenizer::chat_template() const { return chat_template_; }

int32_t Tokenizer::add_special_token(const std::string& content, std::optional<int32_t> id) {
  IRIS_CHECK(!content.empty(), "tokenizer: cannot add an empty special token");
  auto av = std::make_shared<AddedVocab>(*added_);  // copy-on-write: copies of this Tokenizer keep the old set
  int32_t new_id;
  if (const auto it = av->by_content.find(content); it != av->by_content.end()) {
    AddedToken& t = av->tokens[it->second];
    IRIS_CHECK(!id || *id == t.id, "tokenizer: token '", content, "' already has id ", t.id, ", not ", *id);
    t.special = true;
    new_id = t.id;
  } else {
    if (const auto vid = pipe_->model->token_to_id(content)) {
      IRIS_CHECK(!id || *id == *vid, "tokenizer: token '", content, "' is in the vocabulary with id ", *vid,
                 ", not ", *id);
      new_id = *vid;
    } else {
      new_id = id.value_or(vocab_size());
      IRIS_CHECK(new_id >= 0, "tokenizer: token id must be non-negative, got ", new_id);
      IRIS_CHECK(!av->by_id.count(new_id) && !pipe_->model->id_to_token(new_id), "tokenizer: cannot add '", content,
                 "' as id ", new_id, ": that id is already '", id_to_token(new_id), "'");
    }
    AddedToken t;
    t.content = content;
    t.id = new_id;
    t.special = true;
    av->tokens.push_back(std::move(t));
  }
  rebuild_added(*av, pipe_->normalizer.get());
  added_ = std::move(av);
  return new_id;
}

// ---- StreamDecoder ----

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(&tok), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  return advance(false);
}

std::string StreamDecoder::flush() { return advance(true); }

std::string StreamDecoder::advance(bool force) {
  const std::string text = tok_->decode(ids_, skip_special_, false);
  // A trailing U+FFFD is most likely an incomplete UTF-8 sequence that the next tokens will complete.
  const bool incomplete = text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
  if (text.size() <= prefix_.size() || (incomplete && !force)) return "";
  size_t cut = prefix_.size();
  if (text.compare(0, prefix_.size(), prefix_) != 0) {
    // The decoder changed earlier text (it cannot be taken back): emit from the first difference's character.
    cut = 0;
    while (cut < prefix_.size() && text[cut] == prefix_[cut]) ++cut;
    while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80) --cut;
  }
  std::string out = text.substr(cut);
  // Keep the tokens of this emission as context for the next decode; drop those before.
  const size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + long(prefix_index_));
  prefix_ = tok_->decode(ids_, skip_special_, false);
  prefix_index_ = new_prefix_index;
  return out;
}

// ---- JSONL batch encoding ----

void tokenize_jsonl(std::istream& in, std::ostream& out, const Tokenizer& tok, bool add_special_tokens) {
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; })) continue;
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::exception& e) {
      throw Error(str_cat("tokenize_jsonl: line ", line_no, ": malformed JSON: ", e.what()));
    }
    IRIS_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "tokenize_jsonl: line ", line_no,
               ": expected an object with a string field \"text\"");
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(j["text"].get_ref<const std::string&>(), add_special_tokens);
    } catch (const Error& e) {
      throw Error(str_cat("tokenize_jsonl: line ", line_no, ": ", e.what()));
    }
    std::string s = "{\"ids\":[";
    for (size_t k = 0; k < ids.size(); ++k) {
      if (k) s += ',';
      s += std::to_string(ids[k]);
    }
    s += "]}\n";
    out << s;
  }
  IRIS_CHECK(!in.bad(), "tokenize_jsonl: read error after line ", line_no);
}

std::string clean_up_tokenization(std::string text) {
  // The same replacements, in the same order, as transformers' PreTrainedTokenizerBase.clean_up_tokenization.
  static const std::pair<const char*, const char*> rules[] = {
      {" .", "."},   {" ?", "?"},   {" !", "!"},     {" ,", ","},   {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : rules) {
    if (text.find(from) != std::string::npos) text = detail::replace_all(text, from, to);
  }
  return text;
}

}  // namespace iris::text
