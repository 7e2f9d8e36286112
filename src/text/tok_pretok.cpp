// Pre-tokenizers of tokenizer.json: Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit,
// Punctuation, BertPreTokenizer, CharDelimiterSplit. They cut a piece of text into the pre-tokens the BPE model
// then encodes one by one, with the split behaviours of the library's NormalizedString::split.
#include <algorithm>

#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text::detail {

SplitBehavior parse_split_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(str_cat(where, ": unknown split behavior '", name,
                      "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)"));
}

void split_piece(const Piece& p, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
                 bool invert, std::vector<Piece>& out) {
  struct Span {
    size_t start, end;
    bool flag;  // is a match (before the behaviour), then: remove
  };
  // The spans cover the whole text: gaps between matches and the matches themselves (empty matches included).
  std::vector<Span> spans;
  spans.reserve(matches.size() * 2 + 1);
  const size_t n = p.text.size();
  if (n == 0) {
    spans.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (const auto& [a, b] : matches) {
      if (prev != a) spans.push_back({prev, a, false});
      spans.push_back({a, b, true});
      prev = b;
    }
    if (prev != n) spans.push_back({prev, n, false});
  }
  if (invert) {
    for (Span& s : spans) s.flag = !s.flag;
  }

  std::vector<Span> parts;
  parts.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::Removed:
      parts = spans;  // the match flag becomes the remove flag
      break;
    case SplitBehavior::Isolated:
      for (const Span& s : spans) parts.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::Contiguous: {
      // Consecutive spans of the same kind are joined.
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.flag == prev_match && !parts.empty()) {
          parts.back().end = s.end;
        } else {
          parts.push_back({s.start, s.end, false});
        }
        prev_match = s.flag;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.flag && !prev_match && !parts.empty()) {
          parts.back().end = s.end;
        } else {
          parts.push_back({s.start, s.end, false});
        }
        prev_match = s.flag;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      // Walk backwards: a match joins the part that follows it.
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.flag && !prev_match && !parts.empty()) {
          parts.back().start = s.start;
        } else {
          parts.push_back({s.start, s.end, false});
        }
        prev_match = s.flag;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
  }
  for (const Span& s : parts) {
    if (s.flag || s.end == s.start) continue;
    out.push_back(Piece{p.text.substr(s.start, s.end - s.start), p.at_start && s.start == 0});
  }
}

void PreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (const Piece& p : pieces) split(p, out);
  pieces = std::move(out);
}

namespace {

// Every character satisfying pred is a match of its own.
template <typename Pred>
std::vector<std::pair<size_t, size_t>> char_matches(std::string_view s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> m;
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    const uint32_t cp = utf8_next(s, i);
    if (pred(cp)) m.emplace_back(start, i);
  }
  return m;
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> items;
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& item : items) item->pre_tokenize(pieces);
  }
  void split(const Piece& p, std::vector<Piece>& out) const override {
    std::vector<Piece> pieces{p};
    pre_tokenize(pieces);
    for (Piece& q : pieces) out.push_back(std::move(q));
  }
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    std::vector<std::pair<size_t, size_t>> m;
    pattern.find_all(p.text, m);
    split_piece(p, m, behavior, invert, out);
  }
};

// GPT-2's split pattern, which ByteLevel applies when use_regex is set.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  bool add_prefix_space = true;
  std::unique_ptr<Regex> regex;  // set when use_regex
  void split(const Piece& p, std::vector<Piece>& out) const override {
    Piece q = p;
    // (The library's prepend leaves an empty string empty.)
    if (add_prefix_space && !q.text.empty() && q.text[0] != ' ') q.text.insert(q.text.begin(), ' ');
    const size_t first = out.size();
    if (regex) {
      std::vector<std::pair<size_t, size_t>> m;
      regex->find_all(q.text, m);
      split_piece(q, m, SplitBehavior::Isolated, false, out);
    } else if (!q.text.empty()) {
      out.push_back(std::move(q));
    }
    for (size_t k = first; k < out.size(); ++k) out[k].text = byte_level_encode(out[k].text);
  }
};

enum class PrependScheme { Always, First, Never };

PrependScheme parse_prepend_scheme(const Json& j, const std::string& where) {
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    const std::string s = json_string(j, "prepend_scheme", where);
    if (s == "always") return PrependScheme::Always;
    if (s == "first") return PrependScheme::First;
    if (s == "never") return PrependScheme::Never;
    throw Error(str_cat(where, ": unknown prepend_scheme '", s, "' (expected always, first or never)"));
  }
  // Files written before prepend_scheme existed have add_prefix_space.
  return json_bool(j, "add_prefix_space", true, where) ? PrependScheme::Always : PrependScheme::Never;
}

std::string parse_replacement(const Json& j, const std::string& where) {
  const std::string r = json_string(j, "replacement", where);
  bool one_char = !r.empty() && utf8_invalid_at(r) == std::string::npos;
  if (one_char) {
    size_t i = 0;
    utf8_next(r, i);
    one_char = i == r.size();
  }
  IRIS_CHECK(one_char, where, ": Metaspace replacement must be one character, got '", r, "'");
  return r;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  std::string replacement;
  PrependScheme scheme = PrependScheme::Always;
  bool split_on_replacement = true;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    Piece q{replace_all(p.text, " ", replacement), p.at_start};
    const bool starts = q.text.compare(0, replacement.size(), replacement) == 0;
    if (!starts && !q.text.empty() &&
        (scheme == PrependScheme::Always || (scheme == PrependScheme::First && q.at_start))) {
      q.text.insert(0, replacement);
    }
    if (split_on_replacement) {
      std::vector<std::pair<size_t, size_t>> m;
      size_t pos = 0;
      while ((pos = q.text.find(replacement, pos)) != std::string::npos) {
        m.emplace_back(pos, pos + replacement.size());
        pos += replacement.size();
      }
      split_piece(q, m, SplitBehavior::MergedWithNext, false, out);
    } else if (!q.text.empty()) {
      out.push_back(std::move(q));
    }
  }
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  bool individual = false;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    split_piece(p, char_matches(p.text, is_numeric),
                individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous, false, out);
  }
};

// Keeps the runs of \w characters and the runs of other non-space characters (the library's \w+|[^\w\s]+).
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  void split(const Piece& p, std::vector<Piece>& out) const override {
    std::vector<std::pair<size_t, size_t>> m;
    const std::string& s = p.text;
    size_t i = 0;
    int run_kind = 0;  // 0 none, 1 word, 2 other
    size_t run_start = 0;
    while (i < s.size()) {
      const size_t start = i;
      const uint32_t cp = utf8_next(s, i);
      const int kind = is_word_char(cp) ? 1 : is_white_space(cp) ? 0 : 2;
      if (kind != run_kind) {
        if (run_kind != 0) m.emplace_back(run_start, start);
        run_kind = kind;
        run_start = start;
      }
    }
    if (run_kind != 0) m.emplace_back(run_start, s.size());
    split_piece(p, m, SplitBehavior::Removed, true, out);
  }
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void split(const Piece& p, std::vector<Piece>& out) const override {
    split_piece(p, char_matches(p.text, is_white_space), SplitBehavior::Removed, false, out);
  }
};

class PunctuationPreTokenizer : public PreTokenizer {
 public:
  SplitBehavior behavior = SplitBehavior::Isolated;
  void split(const Piece& p, std::vector<Piece>& out) const override {
    split_piece(p, char_matches(p.text, is_punctuation), behavior, false, out);
  }
};

class BertPreTokenizer : public PreTokenizer {
 public:
  void split(const Piece& p, std::vector<Piece>& out) const override {
    std::vector<Piece> words;
    split_piece(p, char_matches(p.text, is_white_space), SplitBehavior::Removed, false, words);
    for (const Piece& w : words) split_piece(w, char_matches(w.text, is_punctuation), SplitBehavior::Isolated, false, out);
  }
};

class CharDelimiterPreTokenizer : public PreTokenizer {
 public:
  uint32_t delimiter = ' ';
  void split(const Piece& p, std::vector<Piece>& out) const override {
    const uint32_t d = delimiter;
    split_piece(p, char_matches(p.text, [d](uint32_t cp) { return cp == d; }), SplitBehavior::Removed, false, out);
  }
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string where = file + ": pre_tokenizer";
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    auto pt = std::make_unique<SequencePreTokenizer>();
    const Json& items = json_field(j, "pretokenizers", where);
    IRIS_CHECK(items.is_array(), where, ": Sequence 'pretokenizers' must be an array");
    for (const Json& item : items) {
      if (auto child = make_pre_tokenizer(item, file)) pt->items.push_back(std::move(child));
    }
    return pt;
  }
  if (type == "Split") {
    auto pt = std::make_unique<SplitPreTokenizer>();
    pt->pattern = parse_pattern(json_field(j, "pattern", where), where + " Split");
    pt->behavior = parse_split_behavior(json_string(j, "behavior", where), where);
    pt->invert = json_bool(j, "invert", false, where);
    return pt;
  }
  if (type == "ByteLevel") {
    auto pt = std::make_unique<ByteLevelPreTokenizer>();
    pt->add_prefix_space = json_bool(j, "add_prefix_space", true, where);
    if (json_bool(j, "use_regex", true, where)) pt->regex = std::make_unique<Regex>(kGpt2Pattern, where);
    return pt;
  }
  if (type == "Metaspace") {
    auto pt = std::make_unique<MetaspacePreTokenizer>();
    pt->replacement = parse_replacement(j, where);
    pt->scheme = parse_prepend_scheme(j, where);
    pt->split_on_replacement = json_bool(j, "split", true, where);
    return pt;
  }
  if (type == "Digits") {
    auto pt = std::make_unique<DigitsPreTokenizer>();
    pt->individual = json_bool(j, "individual_digits", false, where);
    return pt;
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "Punctuation") {
    auto pt = std::make_unique<PunctuationPreTokenizer>();
    if (j.contains("behavior")) pt->behavior = parse_split_behavior(json_string(j, "behavior", where), where);
    return pt;
  }
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "CharDelimiterSplit") {
    auto pt = std::make_unique<CharDelimiterPreTokenizer>();
    const std::string d = json_string(j, "delimiter", where);
    size_t i = 0;
    IRIS_CHECK(!d.empty() && utf8_invalid_at(d) == std::string::npos, where, ": bad delimiter '", d, "'");
    pt->delimiter = utf8_next(d, i);
    IRIS_CHECK(i == d.size(), where, ": delimiter must be one character, got '", d, "'");
    return pt;
  }
  throw Error(str_cat(file, ": unsupported pre_tokenizer type '", type,
                      "' (supported: Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, "
                      "Punctuation, BertPreTokenizer, CharDelimiterSplit)"));
}

// Used by the Metaspace decoder, which shares the pre-tokenizer's settings.
bool metaspace_prepends(const Json& j, const std::string& where) {
  return parse_prepend_scheme(j, where) != PrependScheme::Never;
}
std::string metaspace_replacement(const Json& j, const std::string& where) { return parse_replacement(j, where); }

}  // namespace iris::text::detail
