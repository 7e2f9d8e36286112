// Python string semantics for the Jinja interpreter (see jinja_pystr.h).
#include "text/jinja_pystr.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace iris::text::jinja {
namespace {

bool in_chars(char32_t c, const std::vector<char32_t>* chars) {
  if (!chars) return py_isspace(c);
  return std::find(chars->begin(), chars->end(), c) != chars->end();
}

bool is_cased_letter(char32_t c) {
  auto cat = utf8proc_category(utf8proc_int32_t(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

char32_t upper_cp(char32_t c) {
  return (c >= 0xDC80 && c <= 0xDCFF) ? c : char32_t(utf8proc_toupper(utf8proc_int32_t(c)));
}
char32_t lower_cp(char32_t c) {
  return (c >= 0xDC80 && c <= 0xDCFF) ? c : char32_t(utf8proc_tolower(utf8proc_int32_t(c)));
}
char32_t title_cp(char32_t c) {
  return (c >= 0xDC80 && c <= 0xDCFF) ? c : char32_t(utf8proc_totitle(utf8proc_int32_t(c)));
}

}  // namespace

std::string py_strip(const std::string& s, const Value* chars_arg, bool left, bool right) {
  std::vector<char32_t> chars;
  const std::vector<char32_t>* set = nullptr;
  if (chars_arg && !chars_arg->is_none() && !chars_arg->is_undefined()) {
    chars = utf8_decode(need_str(*chars_arg, "strip"));
    set = &chars;
  }
  auto cps = utf8_decode(s);
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && in_chars(cps[b], set)) ++b;
  if (right)
    while (e > b && in_chars(cps[e - 1], set)) --e;
  return utf8_encode(std::u32string(cps.begin() + long(b), cps.begin() + long(e)));
}

std::vector<std::string> py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> out;
  if (!sep || sep->is_none() || sep->is_undefined()) {
    auto cps = utf8_decode(s);
    std::vector<std::pair<size_t, size_t>> words;  // code point ranges
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && py_isspace(cps[i])) ++i;
      if (i >= cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !py_isspace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    auto piece = [&](size_t b, size_t e) {
      return utf8_encode(std::u32string(cps.begin() + long(b), cps.begin() + long(e)));
    };
    if (maxsplit < 0 || size_t(maxsplit) >= words.size()) {
      for (auto& w : words) out.push_back(piece(w.first, w.second));
      return out;
    }
    // Once maxsplit is reached the remainder is kept as it is, outer whitespace on its far side included
    // ('  a  b  '.split(None, 1) == ['a', 'b  ']).
    if (!from_right) {
      for (size_t k = 0; k < size_t(maxsplit); ++k) out.push_back(piece(words[k].first, words[k].second));
      out.push_back(piece(words[size_t(maxsplit)].first, cps.size()));
    } else {
      size_t first = words.size() - size_t(maxsplit);
      out.push_back(piece(0, words[first - 1].second));
      for (size_t k = first; k < words.size(); ++k) out.push_back(piece(words[k].first, words[k].second));
    }
    return out;
  }
  const std::string& sp = need_str(*sep, "split");
  IRIS_CHECK(!sp.empty(), "split(): empty separator");
  if (!from_right) {
    size_t start = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      size_t p = s.find(sp, start);
      if (p == std::string::npos) break;
      out.push_back(s.substr(start, p - start));
      start = p + sp.size();
      ++n;
    }
    out.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    int64_t n = 0;
    std::vector<std::string> rev;
    while (maxsplit < 0 || n < maxsplit) {
      if (end < sp.size()) break;
      size_t p = s.rfind(sp, end - sp.size());
      if (p == std::string::npos) break;
      rev.push_back(s.substr(p + sp.size(), end - p - sp.size()));
      end = p;
      ++n;
    }
    rev.push_back(s.substr(0, end));
    out.assign(rev.rbegin(), rev.rend());
  }
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  int64_t n = 0;
  if (old.empty()) {  // Python inserts `rep` before every character and at the end
    auto cps = utf8_decode(s);
    for (char32_t c : cps) {
      if (count < 0 || n < count) {
        out += rep;
        ++n;
      }
      utf8_append(out, c);
    }
    if (count < 0 || n < count) out += rep;
    return out;
  }
  size_t start = 0;
  while (count < 0 || n < count) {
    size_t p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += rep;
    start = p + old.size();
    ++n;
  }
  out.append(s, start, std::string::npos);
  return out;
}

bool is_alnum(char32_t c) {
  auto cat = utf8proc_category(utf8proc_int32_t(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

// str.title(): a cased letter after an uncased character starts a word.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : utf8_decode(s)) {
    bool cased = is_cased_letter(c);
    utf8_append(out, cased ? (prev_cased ? lower_cp(c) : title_cp(c)) : c);
    prev_cased = cased;
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out;
  bool first = true;
  for (char32_t c : utf8_decode(s)) {
    utf8_append(out, first ? title_cp(c) : lower_cp(c));
    first = false;
  }
  return out;
}

// Jinja's title filter: words start after whitespace, '-', or an opening bracket.
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char32_t c : utf8_decode(s)) {
    bool sep = py_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      utf8_append(out, c);
      word_start = true;
    } else {
      utf8_append(out, word_start ? upper_cp(c) : lower_cp(c));
      word_start = false;
    }
  }
  return out;
}

bool all_cased(const std::string& s, bool upper) {
  bool any = false;
  for (char32_t c : utf8_decode(s)) {
    if (!is_cased_letter(c)) continue;
    if ((upper && lower_cp(c) != c && upper_cp(c) == c) || (!upper && upper_cp(c) != c && lower_cp(c) == c)) {
      any = true;
    } else if (upper ? upper_cp(c) != c : lower_cp(c) != c) {
      return false;
    }
  }
  return any;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// Python's `fmt % args` for the common conversions (%s %r %d %i %f %e %g %x %o %c %%), with flags, width and
// precision. Mapping keys (%(name)s) are not supported.
std::string percent_format(const std::string& fmt, const std::vector<Value>& args) {
  std::string out;
  size_t ai = 0;
  auto next_arg = [&]() -> const Value& {
    IRIS_CHECK(ai < args.size(), "not enough arguments for format string");
    return args[ai++];
  };
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    IRIS_CHECK(i + 1 < fmt.size(), "incomplete format");
    if (fmt[i + 1] == '%') {
      out.push_back('%');
      ++i;
      continue;
    }
    IRIS_CHECK(fmt[i + 1] != '(', "format: %(name)s mapping keys are not supported");
    size_t j = i + 1;
    std::string spec = "%";
    while (j < fmt.size() && std::strchr("-+ #0", fmt[j]) && fmt[j]) spec.push_back(fmt[j++]);
    while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) spec.push_back(fmt[j++]);
    if (j < fmt.size() && fmt[j] == '.') {
      spec.push_back(fmt[j++]);
      while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) spec.push_back(fmt[j++]);
    }
    IRIS_CHECK(j < fmt.size(), "incomplete format");
    char conv = fmt[j];
    const Value& a = next_arg();
    char buf[512];
    switch (conv) {
      case 's':
      case 'r': {
        std::string s = conv == 's' ? to_str(a) : repr(a);
        // Width/precision on strings: apply by hand (snprintf would count bytes, not code points).
        std::string body = s;
        size_t dot = spec.find('.');
        if (dot != std::string::npos) {
          auto cps = utf8_decode(body);
          size_t prec = size_t(std::atoi(spec.c_str() + dot + 1));
          if (cps.size() > prec) body = utf8_encode(std::u32string(cps.begin(), cps.begin() + long(prec)));
        }
        size_t wstart = spec.find_first_of("123456789");
        int64_t width = (wstart != std::string::npos && (dot == std::string::npos || wstart < dot))
                            ? std::atoi(spec.c_str() + wstart)
                            : 0;
        int64_t len = utf8_length(body);
        if (len < width) {
          std::string pad(size_t(width - len), ' ');
          body = spec.find('-') != std::string::npos ? body + pad : pad + body;
        }
        out += body;
        break;
      }
      case 'd':
      case 'i':
      case 'x':
      case 'X':
      case 'o': {
        IRIS_CHECK(a.is_number(), "%", conv, " format: a number is required, not ", a.type_name());
        long long v = a.is_float() ? (long long)(std::trunc(a.as_float()))
                                   : (long long)(a.is_bool() ? a.as_bool() : a.as_int());
        std::snprintf(buf, sizeof(buf), (spec + "ll" + (conv == 'i' ? 'd' : conv)).c_str(), v);
        out += buf;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G': {
        IRIS_CHECK(a.is_number(), "%", conv, " format: a number is required, not ", a.type_name());
        std::snprintf(buf, sizeof(buf), (spec + conv).c_str(), a.to_double());
        out += buf;
        break;
      }
      case 'c': {
        if (a.is_string())
          out += a.str();
        else if (a.is_int())
          utf8_append(out, char32_t(a.as_int()));
        else
          throw Error("%c requires an int or a character");
        break;
      }
      default:
        throw Error(str_cat("unsupported format character '", conv, "'"));
    }
    i = j;
  }
  IRIS_CHECK(ai == args.size(), "not all arguments converted during string formatting");
  return out;
}

// str.format() with {} / {0} / {name} fields and no format specs.
std::string brace_format(const std::string& fmt, CallArgs& args) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
    } else if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out.push_back('}');
      ++i;
    } else if (c == '{') {
      size_t close = fmt.find('}', i);
      IRIS_CHECK(close != std::string::npos, "format(): single '{' encountered in format string");
      std::string field = fmt.substr(i + 1, close - i - 1);
      IRIS_CHECK(field.find_first_of(":!") == std::string::npos, "format(): format specs are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        IRIS_CHECK(auto_idx < args.pos.size(), "format(): not enough positional arguments");
        v = &args.pos[auto_idx++];
      } else if (std::all_of(field.begin(), field.end(),
                             [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); })) {
        size_t k = size_t(std::stoul(field));
        IRIS_CHECK(k < args.pos.size(), "format(): replacement index ", k, " out of range");
        v = &args.pos[k];
      } else {
        for (auto& kv : args.kw)
          if (kv.first == field) v = &kv.second;
        IRIS_CHECK(v, "format(): missing keyword argument '", field, "'");
      }
      out += to_str(*v);
      i = close;
    } else {
      IRIS_CHECK(c != '}', "format(): single '}' encountered in format string");
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace iris::text::jinja
