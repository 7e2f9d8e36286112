// UTF-8 validation, decoding and lossy repair; Unicode character classes and normalization (utf8proc); GPT-2's
// byte-to-character map. The semantics follow Rust's, since the reference tokenizer library is written in Rust.
#include <utf8proc.h>

#include <cstdlib>

#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text::detail {

namespace {

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// Length of the valid sequence at s[i], or -(length of the maximal invalid prefix) as Rust's Utf8Chunks counts it:
// the longest prefix that could still start a valid sequence, at least one byte.
long check_seq(std::string_view s, size_t i) {
  const auto at = [&](size_t k) -> int { return i + k < s.size() ? int((unsigned char)s[i + k]) : -1; };
  const int b = at(0);
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return (at(1) >= 0 && is_cont((unsigned char)at(1))) ? 2 : -1;
  if (b >= 0xE0 && b <= 0xEF) {
    const int c = at(1);
    bool ok2;
    if (b == 0xE0) ok2 = c >= 0xA0 && c <= 0xBF;
    else if (b == 0xED) ok2 = c >= 0x80 && c <= 0x9F;  // no surrogates
    else ok2 = c >= 0x80 && c <= 0xBF;
    if (!ok2) return -1;
    return (at(2) >= 0 && is_cont((unsigned char)at(2))) ? 3 : -2;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    const int c = at(1);
    bool ok2;
    if (b == 0xF0) ok2 = c >= 0x90 && c <= 0xBF;
    else if (b == 0xF4) ok2 = c >= 0x80 && c <= 0x8F;  // <= U+10FFFF
    else ok2 = c >= 0x80 && c <= 0xBF;
    if (!ok2) return -1;
    if (!(at(2) >= 0 && is_cont((unsigned char)at(2)))) return -2;
    return (at(3) >= 0 && is_cont((unsigned char)at(3))) ? 4 : -3;
  }
  return -1;  // continuation byte, overlong lead C0/C1, or F5..FF
}

}  // namespace

size_t utf8_invalid_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII runs are the common case.
    if ((unsigned char)s[i] < 0x80) {
      ++i;
      continue;
    }
    const long n = check_seq(s, i);
    if (n < 0) return i;
    i += size_t(n);
  }
  return std::string_view::npos;
}

uint32_t utf8_next(std::string_view s, size_t& i) {
  const unsigned char b = (unsigned char)s[i];
  const size_t n = utf8_seq_len(b);
  if (n == 1 || i + n > s.size()) {
    ++i;
    return b;
  }
  uint32_t cp = n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3F);
  i += n;
  return cp;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const long n = check_seq(bytes, i);
    if (n > 0) {
      out.append(bytes.data() + i, size_t(n));
      i += size_t(n);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += size_t(-n);
    }
  }
  return out;
}

bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

bool is_numeric(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const auto c = utf8proc_category(utf8proc_int32_t(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_punctuation(uint32_t cp) {
  if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
                        (cp >= 0x7B && cp <= 0x7E);
  const auto c = utf8proc_category(utf8proc_int32_t(cp));
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool is_word_char(uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  if (cp == 0x200C || cp == 0x200D) return true;  // Join_Control
  const auto c = utf8proc_category(utf8proc_int32_t(cp));
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_ND) || c == UTF8PROC_CATEGORY_NL ||
         c == UTF8PROC_CATEGORY_PC;
}

bool is_mark_nonspacing(uint32_t cp) {
  return cp >= 0x300 && utf8proc_category(utf8proc_int32_t(cp)) == UTF8PROC_CATEGORY_MN;
}

std::string unicode_normalize(std::string_view s, NormForm form) {
  bool ascii = true;
  for (char c : s) ascii = ascii && (unsigned char)c < 0x80;
  if (ascii) return std::string(s);  // every normal form leaves ASCII unchanged
  int flags = UTF8PROC_STABLE;
  switch (form) {
    case NormForm::NFC: flags |= UTF8PROC_COMPOSE; break;
    case NormForm::NFD: flags |= UTF8PROC_DECOMPOSE; break;
    case NormForm::NFKC: flags |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormForm::NFKD: flags |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  // An explicit length (no UTF8PROC_NULLTERM), so that U+0000 inside the text is kept.
  utf8proc_uint8_t* dst = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          utf8proc_ssize_t(s.size()), &dst, utf8proc_option_t(flags));
  IRIS_CHECK(n >= 0, "tokenizer: Unicode normalization failed: ", utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char*>(dst), size_t(n));
  std::free(dst);
  return out;
}

std::string unicode_lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = (unsigned char)s[i];
    if (b < 0x80) {
      out += (b >= 'A' && b <= 'Z') ? char(b + 32) : char(b);
      ++i;
      continue;
    }
    const uint32_t cp = utf8_next(s, i);
    if (cp == 0x130) {
      out += "i\xCC\x87";  // İ lower-cases to two code points (the only unconditional one in SpecialCasing)
    } else {
      utf8_append(out, uint32_t(utf8proc_tolower(utf8proc_int32_t(cp))));
    }
  }
  return out;
}

namespace {

struct ByteMaps {
  std::array<std::string, 256> fwd;
  std::array<int, 324> back;  // mapped code points are below 256 + 68
  ByteMaps() {
    back.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + extra++);
      utf8_append(fwd[size_t(b)], cp);
      back[cp] = b;
    }
  }
};

const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() { return byte_maps().fwd; }

int unicode_to_byte(uint32_t cp) { return cp < 324 ? byte_maps().back[cp] : -1; }

std::string byte_level_encode(std::string_view s) {
  const auto& fwd = byte_maps().fwd;
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) out += fwd[(unsigned char)c];
  return out;
}

}  // namespace iris::text::detail
