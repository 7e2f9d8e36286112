// Post-processors (TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing) that add the special
// tokens around an encoded sequence, and decoders (Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel,
// Metaspace, BPEDecoder, WordPiece) that turn token strings back into text, as the reference library chains them.
#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text::detail {

namespace {

// ---- Post-processors ----

class TemplateProcessor : public PostProcessor {
 public:
  // One item of the single-sequence template: the sequence itself ($A) or special token ids.
  struct Item {
    bool is_sequence = false;
    std::string name;
    std::vector<int32_t> ids;
  };
  std::vector<Item> items;

  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& it : items) {
      if (it.is_sequence) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    ids = std::move(out);
  }
  std::vector<std::pair<std::string, int32_t>> prefix_tokens() const override {
    std::vector<std::pair<std::string, int32_t>> out;
    for (const Item& it : items) {
      if (it.is_sequence) break;
      for (int32_t id : it.ids) out.emplace_back(it.name, id);
    }
    return out;
  }
};

class NoopProcessor : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}  // ByteLevel only trims offsets, which iris has not
};

class SequenceProcessor : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> items;
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : items) p->process(ids);
  }
  std::vector<std::pair<std::string, int32_t>> prefix_tokens() const override {
    for (const auto& p : items) {
      auto t = p->prefix_tokens();
      if (!t.empty()) return t;
    }
    return {};
  }
};

std::pair<std::string, int32_t> parse_token_pair(const Json& j, const char* key, const std::string& where) {
  const Json& v = json_field(j, key, where);
  IRIS_CHECK(v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_number_integer(), where, ": '", key,
             "' must be [token, id], got ", v.dump());
  return {v[0].get<std::string>(), v[1].get<int32_t>()};
}

std::unique_ptr<PostProcessor> make_template(const Json& j, const std::string& where) {
  auto t = std::make_unique<TemplateProcessor>();
  std::unordered_map<std::string, std::vector<int32_t>> specials;
  if (j.contains("special_tokens") && j["special_tokens"].is_object()) {
    for (const auto& [name, spec] : j["special_tokens"].items()) {
      const Json& ids = json_field(spec, "ids", where + " special token '" + name + "'");
      IRIS_CHECK(ids.is_array(), where, ": special token '", name, "' ids must be an array");
      std::vector<int32_t> v;
      for (const Json& id : ids) {
        IRIS_CHECK(id.is_number_integer(), where, ": special token '", name, "' has a non-integer id ", id.dump());
        v.push_back(id.get<int32_t>());
      }
      specials[name] = std::move(v);
    }
  }
  const auto special_item = [&](const std::string& name) {
    const auto it = specials.find(name);
    IRIS_CHECK(it != specials.end(), where, ": template uses special token '", name,
               "' missing from special_tokens");
    return TemplateProcessor::Item{false, name, it->second};
  };
  const Json& single = json_field(j, "single", where);
  if (single.is_string()) {
    // The short form "<s> $A </s>" (pieces may carry a ":type_id" suffix).
    const std::string s = single.get<std::string>();
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t end = std::min(s.find(' ', pos), s.size());
      std::string piece = s.substr(pos, end - pos);
      pos = end + 1;
      if (piece.empty()) continue;
      if (piece[0] == '$') {
        t->items.push_back({true, "A", {}});
        continue;
      }
      const size_t colon = piece.rfind(':');
      if (colon != std::string::npos && colon > 0) piece.resize(colon);
      t->items.push_back(special_item(piece));
    }
    return t;
  }
  IRIS_CHECK(single.is_array(), where, ": TemplateProcessing 'single' must be an array or a string");
  for (const Json& item : single) {
    if (item.contains("SpecialToken")) {
      t->items.push_back(special_item(json_string(item["SpecialToken"], "id", where)));
    } else if (item.contains("Sequence")) {
      const std::string id = json_string(item["Sequence"], "id", where);
      IRIS_CHECK(id == "A", where, ": the single-sequence template can only use sequence A, got '", id, "'");
      t->items.push_back({true, "A", {}});
    } else {
      throw Error(str_cat(where, ": template item must be SpecialToken or Sequence, got ", item.dump()));
    }
  }
  return t;
}

// ---- Decoders ----

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> items;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->decode_chain(tokens);
  }
};

class ReplaceDecoder : public Decoder {
 public:
  Pattern pattern;
  std::string content;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = replace_all(t, pattern, content);
  }
};

// Runs of "<0xNN>" tokens become their bytes read as UTF-8; an invalid run gives one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    size_t n_bytes = 0;
    const auto flush = [&] {
      if (n_bytes == 0) return;
      if (utf8_invalid_at(bytes) == std::string::npos) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < n_bytes; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      n_bytes = 0;
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = parse_hex_byte(t[3], t[4]);
      if (byte >= 0) {
        bytes += char(byte);
        ++n_bytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int parse_hex_byte(char hi, char lo) {
    const int h = hex(hi), l = hex(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder : public Decoder {
 public:
  std::string content;
  size_t start = 0, stop = 0;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      size_t begin = 0, end = t.size();
      for (size_t k = 0; k < start && t.compare(begin, content.size(), content) == 0 && begin < end; ++k) {
        begin += content.size();
      }
      for (size_t k = 0; k < stop && end >= begin + content.size() &&
                         t.compare(end - content.size(), content.size(), content) == 0;
           ++k) {
        end -= content.size();
      }
      t = t.substr(begin, end - begin);
    }
  }
};

// Maps the GPT-2 characters back to bytes (a token with any other character keeps its own UTF-8 bytes), joins
// everything and repairs invalid UTF-8 with U+FFFD.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const size_t mark = bytes.size();
      bool mapped = true;
      size_t i = 0;
      while (i < t.size()) {
        const int b = unicode_to_byte(utf8_next(t, i));
        if (b < 0) {
          mapped = false;
          break;
        }
        bytes += char(b);
      }
      if (!mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// ▁ becomes a space; in the first token every ▁ is dropped when the pre-tokenizer prepends one.
class MetaspaceDecoder : public Decoder {
 public:
  std::string replacement;
  bool prepends = true;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      tokens[k] = replace_all(tokens[k], replacement, (k == 0 && prepends) ? "" : " ");
    }
  }
};

class BpeSuffixDecoder : public Decoder {
 public:
  std::string suffix;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      tokens[k] = replace_all(tokens[k], suffix, k + 1 == tokens.size() ? "" : " ");
    }
  }
};

class WordPieceDecoder : public Decoder {
 public:
  std::string prefix;
  bool cleanup = true;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string& t = tokens[k];
      if (k != 0) {
        // A continuation ("##ing") joins the previous token; anything else starts a new word.
        if (t.compare(0, prefix.size(), prefix) == 0) {
          t.erase(0, prefix.size());
        } else {
          t.insert(t.begin(), ' ');
        }
      }
      if (cleanup) {
        t = clean_up_wordpiece(t);
      }
    }
  }

 private:
  static std::string clean_up_wordpiece(std::string s) {
    static const std::pair<const char*, const char*> rules[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},          {" ,", ","},    {" ' ", "'"},  {" n't", "n't"},
        {" 'm", "'m"},   {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : rules) s = replace_all(s, from, to);
    return s;
  }
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const Json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string where = file + ": post_processor";
  const std::string type = json_type(j, where);
  if (type == "TemplateProcessing") return make_template(j, where);
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "Sequence") {
    auto p = std::make_unique<SequenceProcessor>();
    const Json& items = json_field(j, "processors", where);
    IRIS_CHECK(items.is_array(), where, ": Sequence 'processors' must be an array");
    for (const Json& item : items) {
      if (auto child = make_post_processor(item, file)) p->items.push_back(std::move(child));
    }
    return p;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    const auto cls = parse_token_pair(j, "cls", where), sep = parse_token_pair(j, "sep", where);
    auto t = std::make_unique<TemplateProcessor>();
    t->items.push_back({false, cls.first, {cls.second}});
    t->items.push_back({true, "A", {}});
    t->items.push_back({false, sep.first, {sep.second}});
    return t;
  }
  throw Error(str_cat(file, ": unsupported post_processor type '", type,
                      "' (supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing)"));
}

std::unique_ptr<PostProcessor> make_bos_eos_processor(std::optional<std::pair<std::string, int32_t>> bos,
                                                      std::optional<std::pair<std::string, int32_t>> eos) {
  auto t = std::make_unique<TemplateProcessor>();
  if (bos) t->items.push_back({false, bos->first, {bos->second}});
  t->items.push_back({true, "A", {}});
  if (eos) t->items.push_back({false, eos->first, {eos->second}});
  return t;
}

std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string where = file + ": decoder";
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    auto d = std::make_unique<SequenceDecoder>();
    const Json& items = json_field(j, "decoders", where);
    IRIS_CHECK(items.is_array(), where, ": Sequence 'decoders' must be an array");
    for (const Json& item : items) {
      if (auto child = make_decoder(item, file)) d->items.push_back(std::move(child));
    }
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->pattern = parse_pattern(json_field(j, "pattern", where), where + " Replace");
    d->content = json_string(j, "content", where);
    return d;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = json_string(j, "content", where);
    const auto count = [&](const char* key) -> size_t {
      if (!j.contains(key)) return 0;
      IRIS_CHECK(j[key].is_number_unsigned(), where, ": Strip '", key, "' must be a non-negative integer");
      return j[key].get<size_t>();
    };
    d->start = count("start");
    d->stop = count("stop");
    IRIS_CHECK(!d->content.empty(), where, ": Strip content must not be empty");
    return d;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    d->replacement = metaspace_replacement(j, where);
    d->prepends = metaspace_prepends(j, where);
    return d;
  }
  if (type == "BPEDecoder") {
    auto d = std::make_unique<BpeSuffixDecoder>();
    d->suffix = j.contains("suffix") ? json_string(j, "suffix", where) : "</w>";
    return d;
  }
  if (type == "WordPiece") {
    auto d = std::make_unique<WordPieceDecoder>();
    d->prefix = j.contains("prefix") ? json_string(j, "prefix", where) : "##";
    d->cleanup = json_bool(j, "cleanup", true, where);
    return d;
  }
  throw Error(str_cat(file, ": unsupported decoder type '", type,
                      "' (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace, "
                      "BPEDecoder, WordPiece)"));
}

}  // namespace iris::text::detail
