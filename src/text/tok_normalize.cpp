// Normalizers of tokenizer.json: Sequence, Prepend, Append, Replace, NFC/NFD/NFKC/NFKD, Lowercase, Strip,
// StripAccents, ByteLevel. Each rewrites the text of one piece (offsets are not tracked: iris needs ids only).
#include <utf8proc.h>

#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text::detail {

namespace {

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> items;
  void normalize(std::string& s) const override {
    for (const auto& n : items) n->normalize(s);
  }
};

class PrependNormalizer : public Normalizer {
 public:
  std::string prepend;
  // The library prepends only to non-empty text, so "" stays "" (the empty string encodes to just the BOS).
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend);
  }
};

class AppendNormalizer : public Normalizer {
 public:
  std::string append;
  void normalize(std::string& s) const override {
    if (!s.empty()) s += append;
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  Pattern pattern;
  std::string content;
  void normalize(std::string& s) const override { s = replace_all(s, pattern, content); }
};

class UnicodeNormalizer : public Normalizer {
 public:
  NormForm form = NormForm::NFC;
  void normalize(std::string& s) const override { s = unicode_normalize(s, form); }
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = unicode_lowercase(s); }
};

class StripNormalizer : public Normalizer {
 public:
  bool left = true, right = true;
  void normalize(std::string& s) const override {
    size_t begin = 0, end = s.size();
    if (left) {
      while (begin < end) {
        size_t i = begin;
        if (!is_white_space(utf8_next(s, i))) break;
        begin = i;
      }
    }
    if (right) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && ((unsigned char)s[start] & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!is_white_space(utf8_next(s, i))) break;
        end = start;
      }
    }
    s = s.substr(begin, end - begin);
  }
};

class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
      const size_t start = i;
      const uint32_t cp = utf8_next(s, i);
      const auto cat = cp < 0x300 ? UTF8PROC_CATEGORY_LL : utf8proc_category(utf8proc_int32_t(cp));
      if (cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME) continue;
      out.append(s, start, i - start);
    }
    s = std::move(out);
  }
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = byte_level_encode(s); }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string where = file + ": normalizer";
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    auto n = std::make_unique<SequenceNormalizer>();
    const Json& items = json_field(j, "normalizers", where);
    IRIS_CHECK(items.is_array(), where, ": Sequence 'normalizers' must be an array");
    for (const Json& item : items) {
      if (auto child = make_normalizer(item, file)) n->items.push_back(std::move(child));
    }
    return n;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prepend = json_string(j, "prepend", where);
    return n;
  }
  if (type == "Append") {
    auto n = std::make_unique<AppendNormalizer>();
    n->append = json_string(j, "append", where);
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = parse_pattern(json_field(j, "pattern", where), where + " Replace");
    n->content = json_string(j, "content", where);
    return n;
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    auto n = std::make_unique<UnicodeNormalizer>();
    n->form = type == "NFC" ? NormForm::NFC : type == "NFD" ? NormForm::NFD : type == "NFKC" ? NormForm::NFKC
                                                                                             : NormForm::NFKD;
    return n;
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = json_bool(j, "strip_left", true, where);
    n->right = json_bool(j, "strip_right", true, where);
    return n;
  }
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  throw Error(str_cat(file, ": unsupported normalizer type '", type,
                      "' (supported: Sequence, Prepend, Append, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, "
                      "StripAccents, ByteLevel)"));
}

}  // namespace iris::text::detail
