// PCRE2 (JIT) wrapper for the tokenizer's split and replace patterns, literal/regex patterns as tokenizer.json
// writes them, and the small JSON accessors that name the file and component in their errors.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text::detail {

namespace {

// The White_Space property as a class body. Oniguruma (which the reference library uses) gives \s exactly this
// set; PCRE2's UCP \s adds U+180E, so patterns are rewritten to keep the two in agreement.
constexpr const char* kWhiteSpaceBody = "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
                                        "\\x{202F}\\x{205F}\\x{3000}";

std::string rewrite_white_space(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false, quoted = false;
  size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    if (quoted) {  // \Q...\E is literal
      if (c == '\\' && i + 1 < p.size() && p[i + 1] == 'E') {
        quoted = false;
        out += "\\E";
        i += 2;
      } else {
        out += c;
        ++i;
      }
      continue;
    }
    if (c == '\\' && i + 1 < p.size()) {
      const char d = p[i + 1];
      if (d == 's') {
        out += in_class ? std::string(kWhiteSpaceBody) : "[" + std::string(kWhiteSpaceBody) + "]";
      } else if (d == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceBody) + "]";
      } else {
        if (d == 'Q') quoted = true;
        out += c;
        out += d;
      }
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') out += p[i++];  // a leading ] is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]
      const size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 2;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
    ++i;
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  const std::string rewritten = rewrite_white_space(pattern);
  int err = 0;
  PCRE2_SIZE err_off = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(), PCRE2_UTF | PCRE2_UCP,
                        &err, &err_off, nullptr);
  if (!code_) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw Error(str_cat(where, ": cannot compile regex '", pattern, "' at offset ", err_off, ": ",
                        reinterpret_cast<const char*>(msg)));
  }
  // JIT is an optimisation only: when unavailable, pcre2_match interprets.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  struct MatchData {
    pcre2_match_data* md;
    ~MatchData() { pcre2_match_data_free(md); }
  } data{pcre2_match_data_create_from_pattern(code_, nullptr)};
  IRIS_CHECK(data.md, "tokenizer: out of memory for regex match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t offset = 0;
  while (offset <= s.size()) {
    // The text was validated once up front, so PCRE2 need not check it again for every match.
    const int rc = pcre2_match(code_, subject, s.size(), offset, PCRE2_NO_UTF_CHECK, data.md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      throw Error(str_cat("tokenizer: regex '", pattern_, "' failed: ", reinterpret_cast<const char*>(msg)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.md);
    const size_t start = ov[0], end = ov[1];
    out.emplace_back(start, end);
    if (end > start) {
      offset = end;
    } else {
      if (end >= s.size()) break;
      offset = end + utf8_seq_len((unsigned char)s[end]);  // an empty match moves on by one character
    }
  }
}

void Pattern::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex) {
    regex->find_all(s, out);
    return;
  }
  if (literal.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(literal, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + literal.size());
    pos += literal.size();
  }
}

Pattern parse_pattern(const Json& j, const std::string& where) {
  IRIS_CHECK(j.is_object(), where, ": pattern must be an object {\"String\": ...} or {\"Regex\": ...}, got ",
             j.dump());
  Pattern p;
  if (j.contains("String")) {
    IRIS_CHECK(j["String"].is_string(), where, ": pattern String must be a string");
    p.literal = j["String"].get<std::string>();
  } else if (j.contains("Regex")) {
    IRIS_CHECK(j["Regex"].is_string(), where, ": pattern Regex must be a string");
    p.regex = std::make_shared<Regex>(j["Regex"].get<std::string>(), where);
  } else {
    throw Error(str_cat(where, ": pattern must have a String or Regex field, got ", j.dump()));
  }
  return p;
}

std::string replace_all(std::string_view s, const Pattern& pat, std::string_view content) {
  std::vector<std::pair<size_t, size_t>> m;
  pat.find_all(s, m);
  if (m.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size() + m.size() * content.size());
  size_t prev = 0;
  for (const auto& [a, b] : m) {
    out.append(s.data() + prev, a - prev);
    out.append(content);
    prev = b;
  }
  out.append(s.data() + prev, s.size() - prev);
  return out;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  size_t prev = 0, pos;
  while ((pos = s.find(from, prev)) != std::string_view::npos) {
    out.append(s.data() + prev, pos - prev);
    out.append(to);
    prev = pos + from.size();
  }
  out.append(s.data() + prev, s.size() - prev);
  return out;
}

const Json& json_field(const Json& j, const char* key, const std::string& where) {
  IRIS_CHECK(j.is_object() && j.contains(key), where, ": missing field '", key, "'");
  return j[key];
}

std::string json_string(const Json& j, const char* key, const std::string& where) {
  const Json& v = json_field(j, key, where);
  IRIS_CHECK(v.is_string(), where, ": field '", key, "' must be a string, got ", v.dump());
  return v.get<std::string>();
}

bool json_bool(const Json& j, const char* key, bool fallback, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  IRIS_CHECK(j[key].is_boolean(), where, ": field '", key, "' must be true or false, got ", j[key].dump());
  return j[key].get<bool>();
}

std::string json_type(const Json& j, const std::string& where) {
  IRIS_CHECK(j.is_object(), where, ": expected an object with a \"type\", got ", j.dump().substr(0, 200));
  return json_string(j, "type", where);
}

}  // namespace iris::text::detail
