// Jinja lexer and parser for chat templates. The lexer reproduces jinja2/lexer.py with the settings
// transformers uses (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False): newlines normalised
// to \n, one trailing newline dropped, `{%-`/`-%}` stripping, a newline after `%}`/`#}` removed, and
// spaces/tabs before a block or comment tag at the start of a line removed. The parser is a recursive-descent
// copy of Jinja's grammar.
#include <cstring>
#include <string_view>

#include "tensor/error.h"
#include "text/jinja_ast.h"

namespace iris::text::jinja {
namespace {

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type;
  size_t pos;  // byte offset into the normalised source
  std::string value;
  int64_t ival = 0;
  double fval = 0.0;
};

constexpr int kMaxDepth = 200;  // nesting limit for expressions and blocks (guards the native stack)

// Where a byte offset is, as 1-based line and column.
class SourceMap {
 public:
  explicit SourceMap(const std::string& src) {
    starts_.push_back(0);
    for (size_t i = 0; i < src.size(); ++i)
      if (src[i] == '\n') starts_.push_back(i + 1);
  }
  void locate(size_t pos, int& line, int& col) const {
    size_t lo = 0, hi = starts_.size();
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      if (starts_[mid] <= pos)
        lo = mid;
      else
        hi = mid;
    }
    line = int(lo + 1);
    col = int(pos - starts_[lo] + 1);
  }

 private:
  std::vector<size_t> starts_;
};

[[noreturn]] void syntax_error(const SourceMap& map, size_t pos, const std::string& msg) {
  int line = 0, col = 0;
  map.locate(pos, line, col);
  throw Error(str_cat("chat template syntax error at line ", line, ", column ", col, ": ", msg));
}

// Length of the code point starting at s[i] when it is whitespace by Python's str.isspace(), else 0.
size_t space_len_at(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return py_isspace(c) ? 1 : 0;
  size_t n = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
  if (i + n > s.size()) return 0;
  auto cps = utf8_decode(s.substr(i, n));
  return (cps.size() == 1 && py_isspace(cps[0])) ? n : 0;
}

// s.rstrip() with Python's whitespace.
std::string_view py_rstrip(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4) --start;
    if (space_len_at(s, start) != end - start) break;
    end = start;
  }
  return s.substr(0, end);
}

class Lexer {
 public:
  explicit Lexer(const std::string& source) {
    // Normalise \r\n and \r to \n, and drop one trailing newline (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    map_ = std::make_unique<SourceMap>(src_);
  }

  const SourceMap& map() const { return *map_; }

  std::vector<Token> run() {
    size_t pos = 0;
    const size_t n = src_.size();
    while (pos < n) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit_data(std::string_view(src_).substr(pos));
        break;
      }
      char kind = src_[tag + 1];
      char sign = (tag + 2 < n && (src_[tag + 2] == '-' || src_[tag + 2] == '+')) ? src_[tag + 2] : 0;
      size_t after = tag + 2 + (sign ? 1 : 0);
      size_t raw_end = 0;
      bool raw = kind == '%' && match_raw_begin(after, raw_end);
      emit_data(strip_before(std::string_view(src_).substr(pos, tag - pos), sign, kind != '{'));
      if (raw) {
        line_starting_ = src_[raw_end - 1] == '\n';
        pos = lex_raw(tag, raw_end);
      } else if (kind == '#') {
        pos = skip_comment(tag, after);
      } else {
        bool block = kind == '%';
        toks_.push_back(Token{block ? Tok::BlockBegin : Tok::VarBegin, tag, {}});
        line_starting_ = false;
        pos = lex_tag(tag, after, block);
      }
    }
    toks_.push_back(Token{Tok::Eof, src_.size(), {}});
    return std::move(toks_);
  }

 private:
  bool starts_with(size_t pos, const char* s) const { return src_.compare(pos, std::strlen(s), s) == 0; }

  size_t find_tag(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  size_t skip_unicode_space(size_t pos) const {
    while (pos < src_.size()) {
      size_t len = space_len_at(src_, pos);
      if (!len) break;
      pos += len;
    }
    return pos;
  }

  // Jinja's OptionalLStrip: `-` strips all whitespace before the tag; otherwise lstrip_blocks removes spaces
  // and tabs between the start of the line and a block or comment tag.
  std::string_view strip_before(std::string_view text, char sign, bool lstrip_applies) const {
    if (sign == '-') return py_rstrip(text);
    if (sign == '+' || !lstrip_applies) return text;
    size_t l_pos = text.rfind('\n');
    l_pos = (l_pos == std::string_view::npos) ? 0 : l_pos + 1;
    if (l_pos > 0 || line_starting_) {
      bool only_blank = true;
      for (size_t i = l_pos; i < text.size(); ++i)
        if (text[i] != ' ' && text[i] != '\t') {
          only_blank = false;
          break;
        }
      if (only_blank) return text.substr(0, l_pos);
    }
    return text;
  }

  void emit_data(std::string_view text) {
    if (text.empty()) return;
    size_t pos = size_t(text.data() - src_.data());
    toks_.push_back(Token{Tok::Data, pos, std::string(text)});
  }

  // `{%[-+]? raw [-]%}`: on a match, *end is the offset after the tag (and its `-` whitespace).
  bool match_raw_begin(size_t pos, size_t& end) const {
    size_t p = skip_ascii_space(pos);
    if (!starts_with(p, "raw")) return false;
    p += 3;
    if (p < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_'))
      return false;
    p = skip_ascii_space(p);
    if (starts_with(p, "-%}")) {
      end = skip_unicode_space(p + 3);
      return true;
    }
    if (starts_with(p, "%}")) {
      end = p + 2;
      return true;
    }
    return false;
  }

  size_t skip_ascii_space(size_t p) const {
    while (p < src_.size() && std::strchr(" \t\n\r\f\v", src_[p]) && src_[p] != '\0') ++p;
    return p;
  }

  size_t lex_raw(size_t tag, size_t pos) {
    for (size_t i = src_.find("{%", pos); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t p = i + 2;
      char sign = (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ? src_[p] : 0;
      if (sign) ++p;
      p = skip_ascii_space(p);
      if (!starts_with(p, "endraw")) continue;
      p = skip_ascii_space(p + 6);
      size_t end;
      if (starts_with(p, "+%}")) {
        end = p + 3;
      } else if (starts_with(p, "-%}")) {
        end = skip_unicode_space(p + 3);
      } else if (starts_with(p, "%}")) {
        end = p + 2;
        if (end < src_.size() && src_[end] == '\n') ++end;
      } else {
        continue;
      }
      emit_data(strip_before(std::string_view(src_).substr(pos, i - pos), sign, true));
      line_starting_ = src_[end - 1] == '\n';
      return end;
    }
    syntax_error(*map_, tag, "missing end of raw directive ({% endraw %})");
  }

  size_t skip_comment(size_t tag, size_t pos) {
    for (size_t j = pos; j + 1 < src_.size(); ++j) {
      if (starts_with(j, "+#}")) {
        line_starting_ = false;
        return j + 3;
      }
      if (starts_with(j, "-#}")) {
        size_t end = skip_unicode_space(j + 3);
        line_starting_ = src_[end - 1] == '\n';
        return end;
      }
      if (starts_with(j, "#}")) {
        size_t end = j + 2;
        if (end < src_.size() && src_[end] == '\n') ++end;
        line_starting_ = src_[end - 1] == '\n';
        return end;
      }
    }
    syntax_error(*map_, tag, "missing end of comment tag '#}'");
  }

  // Tokens of one {{ }} or {% %} tag; returns the offset after its end delimiter.
  size_t lex_tag(size_t tag, size_t pos, bool block) {
    std::vector<char> balance;
    const size_t n = src_.size();
    while (true) {
      if (pos >= n) {
        syntax_error(*map_, tag,
                     block ? "unexpected end of template: '{%' tag is not closed by '%}'"
                           : "unexpected end of template: '{{' is not closed by '}}'");
      }
      if (balance.empty()) {
        if (block) {
          if (starts_with(pos, "+%}")) return end_tag(Tok::BlockEnd, pos, pos + 3);
          if (starts_with(pos, "-%}")) return end_tag(Tok::BlockEnd, pos, skip_unicode_space(pos + 3));
          if (starts_with(pos, "%}"))
            return end_tag(Tok::BlockEnd, pos, pos + 2 + ((pos + 2 < n && src_[pos + 2] == '\n') ? 1 : 0));
        } else {
          if (starts_with(pos, "-}}")) return end_tag(Tok::VarEnd, pos, skip_unicode_space(pos + 3));
          if (starts_with(pos, "}}")) return end_tag(Tok::VarEnd, pos, pos + 2);
        }
      }
      char c = src_[pos];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
        ++pos;
      } else if (c >= '0' && c <= '9') {
        pos = lex_number(pos);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos;
        while (e < n && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        toks_.push_back(Token{Tok::Name, pos, src_.substr(pos, e - pos)});
        pos = e;
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        pos = lex_operator(pos, balance);
      }
    }
  }

  size_t end_tag(Tok type, size_t pos, size_t end) {
    toks_.push_back(Token{type, pos, {}});
    line_starting_ = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_number(size_t pos) {
    const size_t n = src_.size();
    auto digits = [&](size_t p) {
      while (p < n &&
             (std::isdigit(static_cast<unsigned char>(src_[p])) ||
              (src_[p] == '_' && p + 1 < n && std::isdigit(static_cast<unsigned char>(src_[p + 1])))))
        ++p;
      return p;
    };
    auto is_digit = [&](size_t p) { return p < n && std::isdigit(static_cast<unsigned char>(src_[p])); };
    // Hex / octal / binary integers.
    if (src_[pos] == '0' && pos + 1 < n && std::strchr("xXoObB", src_[pos + 1]) && src_[pos + 1] != '\0') {
      int base = (src_[pos + 1] == 'x' || src_[pos + 1] == 'X')   ? 16
                 : (src_[pos + 1] == 'o' || src_[pos + 1] == 'O') ? 8
                                                                  : 2;
      size_t e = pos + 2;
      int64_t v = 0;
      bool any = false;
      while (e < n) {
        char ch = src_[e];
        int d = (ch >= '0' && ch <= '9')   ? ch - '0'
                : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10
                : (ch == '_')              ? -2
                                           : -1;
        if (d == -2) {
          ++e;
          continue;
        }
        if (d < 0 || d >= base) break;
        if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v))
          syntax_error(*map_, pos, "integer literal too large");
        any = true;
        ++e;
      }
      if (!any) syntax_error(*map_, pos, "invalid integer literal");
      Token t{Tok::Int, pos, src_.substr(pos, e - pos)};
      t.ival = v;
      toks_.push_back(std::move(t));
      return e;
    }
    size_t e = digits(pos);
    bool is_float = false;
    bool after_dot = pos > 0 && src_[pos - 1] == '.';  // `foo.0.1` is two attribute lookups, not a float
    if (!after_dot) {
      if (e < n && src_[e] == '.' && is_digit(e + 1)) {
        e = digits(e + 1);
        is_float = true;
      }
      if (e < n && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t p = e + 1;
        if (p < n && (src_[p] == '+' || src_[p] == '-')) ++p;
        if (is_digit(p)) {
          e = digits(p);
          is_float = true;
        }
      }
    }
    std::string text;
    for (size_t i = pos; i < e; ++i)
      if (src_[i] != '_') text.push_back(src_[i]);
    if (!is_float && text.size() > 1 && text[0] == '0' && text.find_first_not_of('0') != std::string::npos)
      syntax_error(*map_, pos, "leading zeros in decimal integer literals are not permitted");
    Token t{is_float ? Tok::Float : Tok::Int, pos, src_.substr(pos, e - pos)};
    if (is_float) {
      t.fval = std::strtod(text.c_str(), nullptr);
    } else {
      int64_t v = 0;
      for (char ch : text)
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, ch - '0', &v))
          syntax_error(*map_, pos, "integer literal too large");
      t.ival = v;
    }
    toks_.push_back(std::move(t));
    return e;
  }

  // A quoted string with Python's unicode-escape rules (what Jinja applies to string literals).
  size_t lex_string(size_t pos) {
    const char q = src_[pos];
    const size_t n = src_.size();
    std::string out;
    size_t i = pos + 1;
    auto hex = [&](size_t at, int count) -> char32_t {
      uint32_t v = 0;
      for (int k = 0; k < count; ++k) {
        if (at + size_t(k) >= n || !std::isxdigit(static_cast<unsigned char>(src_[at + size_t(k)])))
          syntax_error(*map_, at - 2, str_cat("truncated \\", src_[at - 1], " escape in string literal"));
        char ch = src_[at + size_t(k)];
        v = v * 16 +
            uint32_t(std::isdigit(static_cast<unsigned char>(ch)) ? ch - '0' : (std::tolower(ch) - 'a' + 10));
      }
      if (v > 0x10FFFF) syntax_error(*map_, at - 2, "illegal Unicode character in string literal");
      return char32_t(v);
    };
    while (true) {
      if (i >= n) syntax_error(*map_, pos, "unterminated string literal");
      char c = src_[i];
      if (c == q) break;
      if (c != '\\') {
        out.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= n) syntax_error(*map_, pos, "unterminated string literal");
      char e = src_[i + 1];
      i += 2;
      switch (e) {
        case '\n':
          break;  // line continuation
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
          utf8_append(out, hex(i, 2));
          i += 2;
          break;
        case 'u':
          utf8_append(out, hex(i, 4));
          i += 4;
          break;
        case 'U':
          utf8_append(out, hex(i, 8));
          i += 8;
          break;
        case 'N':
          syntax_error(*map_, i - 2, "\\N{...} escapes are not supported in string literals");
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = uint32_t(e - '0');
            for (int k = 0; k < 2 && i < n && src_[i] >= '0' && src_[i] <= '7'; ++k, ++i)
              v = v * 8 + uint32_t(src_[i] - '0');
            utf8_append(out, char32_t(v));
          } else {
            out.push_back('\\');  // unknown escapes stay as written, like Python
            out.push_back(e);
          }
      }
    }
    Token t{Tok::String, pos, std::move(out)};
    toks_.push_back(std::move(t));
    return i + 1;
  }

  size_t lex_operator(size_t pos, std::vector<char>& balance) {
    static const char* two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : two) {
      if (starts_with(pos, op)) {
        toks_.push_back(Token{Tok::Op, pos, op});
        return pos + 2;
      }
    }
    char c = src_[pos];
    if (!std::strchr("+-/*%~[](){}<>=.:|,;", c) || c == '\0') {
      // Show the whole (possibly multi-byte) character, or its code for control bytes.
      auto cps = utf8_decode(std::string_view(src_).substr(pos, 4));
      char32_t cp = cps.empty() ? char32_t(static_cast<unsigned char>(c)) : cps[0];
      std::string shown;
      if (cp < 0x20 || (cp >= 0xDC80 && cp <= 0xDCFF))
        shown = str_cat("U+", std::hex, uint32_t(cp));
      else
        utf8_append(shown, cp);
      syntax_error(*map_, pos, str_cat("unexpected character '", shown, "' in tag"));
    }
    if (c == '(' || c == '[' || c == '{') {
      balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) syntax_error(*map_, pos, str_cat("unexpected '", c, "'"));
      if (balance.back() != c)
        syntax_error(*map_, pos, str_cat("unexpected '", c, "', expected '", balance.back(), "'"));
      balance.pop_back();
    }
    toks_.push_back(Token{Tok::Op, pos, std::string(1, c)});
    return pos + 1;
  }

  std::string src_;
  std::unique_ptr<SourceMap> map_;
  std::vector<Token> toks_;
  bool line_starting_ = true;
};

// ---- parser ----

class Parser {
 public:
  Parser(std::vector<Token> toks, const SourceMap& map) : toks_(std::move(toks)), map_(map) {}

  std::unique_ptr<Template> run() {
    auto t = std::make_unique<Template>();
    std::string found;
    t->body = subparse({}, found, nullptr, "");
    return t;
  }

 private:
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  void advance() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().value == op; }
  bool is_name(const char* name) const { return cur().type == Tok::Name && cur().value == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Data:
        return "template text";
      case Tok::VarBegin:
        return "'{{'";
      case Tok::VarEnd:
        return "end of print statement '}}'";
      case Tok::BlockBegin:
        return "'{%'";
      case Tok::BlockEnd:
        return "end of statement block '%}'";
      case Tok::Name:
        return "'" + t.value + "'";
      case Tok::String:
        return "string literal";
      case Tok::Int:
      case Tok::Float:
        return "number '" + t.value + "'";
      case Tok::Op:
        return "'" + t.value + "'";
      case Tok::Eof:
        return "end of template";
    }
    return "token";
  }

  [[noreturn]] void fail(const Token& t, const std::string& msg) const { syntax_error(map_, t.pos, msg); }
  [[noreturn]] void fail_expected(const std::string& what) const {
    fail(cur(), str_cat("expected ", what, ", got ", describe(cur())));
  }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail_expected(str_cat("'", op, "'"));
  }
  void expect_block_end() {
    if (cur().type != Tok::BlockEnd) fail_expected("end of statement block '%}'");
    advance();
  }
  std::string expect_name(const char* what) {
    if (cur().type != Tok::Name) fail_expected(what);
    std::string v = cur().value;
    advance();
    return v;
  }

  template <typename Node>
  std::unique_ptr<Node> make(const Token& at) {
    auto node = std::make_unique<Node>();
    map_.locate(at.pos, node->line, node->col);
    return node;
  }
  ExprPtr make_expr(ExprKind kind, const Token& at) {
    auto e = make<Expr>(at);
    e->kind = kind;
    return e;
  }

  struct DepthGuard {
    Parser* p;
    DepthGuard(Parser* parser) : p(parser) {
      if (++p->depth_ > kMaxDepth) p->fail(p->cur(), "template nested too deeply");
    }
    ~DepthGuard() { --p->depth_; }
  };

  // Statements until one of `ends` opens a block tag; leaves the stream after that tag's name, in *found.
  Body subparse(std::vector<std::string> ends, std::string& found, const Token* opener,
                const std::string& opener_name) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case Tok::Data: {
          auto s = make<Stmt>(t);
          s->kind = StmtKind::Text;
          s->text = t.value;
          body.push_back(std::move(s));
          advance();
          break;
        }
        case Tok::VarBegin: {
          auto s = make<Stmt>(t);
          advance();
          s->kind = StmtKind::Output;
          s->expr = parse_tuple(true, false, {});
          if (cur().type != Tok::VarEnd) fail_expected("end of print statement '}}'");
          advance();
          body.push_back(std::move(s));
          break;
        }
        case Tok::BlockBegin: {
          const Token& nt = peek();
          if (nt.type == Tok::Name) {
            for (const auto& e : ends) {
              if (nt.value == e) {
                found = e;
                advance();
                advance();
                return body;
              }
            }
          }
          stmt_begin_ = i_;
          advance();
          body.push_back(parse_statement(ends));
          break;
        }
        case Tok::Eof:
          if (opener) {
            int line = 0, col = 0;
            map_.locate(opener->pos, line, col);
            std::string want;
            for (size_t k = 0; k < ends.size(); ++k) want += (k ? " or '" : "'") + ends[k] + "'";
            fail(t, str_cat("unexpected end of template: the '", opener_name, "' block opened at line ", line,
                            ", column ", col, " is not closed (expected ", want, ")"));
          }
          return body;
        default:
          fail(t, str_cat("unexpected ", describe(t)));
      }
    }
  }

  StmtPtr parse_statement(const std::vector<std::string>& enclosing_ends) {
    const Token& t = cur();
    if (t.type != Tok::Name) fail(t, str_cat("tag name expected, got ", describe(t)));
    const std::string name = t.value;
    if (name == "for") return parse_for();
    if (name == "if") return parse_if();
    if (name == "set") return parse_set();
    if (name == "macro") return parse_macro();
    if (name == "generation") return parse_simple_block(StmtKind::Generation, "endgeneration");
    if (name == "filter") return parse_filter_block();
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail(t, str_cat("'", name, "' outside of a for loop"));
      auto s = make<Stmt>(t);
      s->kind = name == "break" ? StmtKind::Break : StmtKind::Continue;
      advance();
      expect_block_end();
      return s;
    }
    if (name == "do" || name == "print") {
      auto s = make<Stmt>(t);
      s->kind = name == "do" ? StmtKind::Do : StmtKind::Output;
      advance();
      s->expr = parse_tuple(true, false, {});
      expect_block_end();
      return s;
    }
    if (name.rfind("end", 0) == 0 || name == "else" || name == "elif") {
      std::string open = enclosing_ends.empty() ? std::string("no block is open")
                                                : str_cat("expected '", enclosing_ends[0], "'");
      fail(t, str_cat("unexpected '", name, "' (", open, ")"));
    }
    static const char* unsupported[] = {"extends", "block", "include", "import",
                                        "from",    "call",  "with",    "autoescape"};
    for (const char* u : unsupported)
      if (name == u) fail(t, str_cat("the '", name, "' tag is not supported in chat templates"));
    fail(t, str_cat("unknown tag '", name, "'"));
  }

  std::vector<std::string> parse_targets(const char* stop_name) {
    std::vector<std::string> targets;
    bool paren = skip_op("(");
    while (true) {
      targets.push_back(expect_name("a variable name"));
      if (!skip_op(",")) break;
      if (paren && is_op(")")) break;
      if (stop_name && is_name(stop_name)) break;
    }
    if (paren) expect_op(")");
    return targets;
  }

  StmtPtr parse_for() {
    const Token& open = toks_[stmt_begin_];
    auto s = make<Stmt>(cur());
    s->kind = StmtKind::For;
    advance();
    s->targets = parse_targets("in");
    if (!skip_name("in")) fail_expected("'in'");
    s->expr = parse_tuple(false, false, {"recursive"});
    if (skip_name("if")) s->cond = parse_expression(true);
    if (is_name("recursive")) fail(cur(), "recursive for loops are not supported");
    expect_block_end();
    std::string found;
    ++loop_depth_;
    s->body = subparse({"endfor", "else"}, found, &open, "for");
    --loop_depth_;
    if (found == "else") {
      expect_block_end();
      s->else_body = subparse({"endfor"}, found, &open, "for");
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_if() {
    const Token& open = toks_[stmt_begin_];
    auto s = make<Stmt>(cur());
    s->kind = StmtKind::If;
    advance();
    ExprPtr cond = parse_tuple(false, false, {});
    while (true) {
      expect_block_end();
      std::string found;
      Body body = subparse({"elif", "else", "endif"}, found, &open, "if");
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (found == "elif") {
        cond = parse_tuple(false, false, {});
        continue;
      }
      if (found == "else") {
        expect_block_end();
        Body else_body = subparse({"endif"}, found, &open, "if");
        s->branches.emplace_back(nullptr, std::move(else_body));
      }
      expect_block_end();
      return s;
    }
  }

  StmtPtr parse_set() {
    const Token& open = toks_[stmt_begin_];
    auto s = make<Stmt>(cur());
    advance();
    std::string first = expect_name("a variable name after 'set'");
    if (skip_op(".")) {
      s->kind = StmtKind::SetAttr;
      s->targets.push_back(first);
      s->attr = expect_name("an attribute name");
      expect_op("=");
      s->expr = parse_tuple(true, false, {});
      expect_block_end();
      return s;
    }
    s->targets.push_back(first);
    while (skip_op(",")) s->targets.push_back(expect_name("a variable name"));
    if (skip_op("=")) {
      s->kind = StmtKind::Set;
      s->expr = parse_tuple(true, false, {});
      expect_block_end();
      return s;
    }
    if (s->targets.size() != 1) fail_expected("'='");
    s->kind = StmtKind::SetBlock;
    while (skip_op("|")) s->filters.push_back(parse_filter(nullptr));
    expect_block_end();
    std::string found;
    s->body = subparse({"endset"}, found, &open, "set");
    expect_block_end();
    return s;
  }

  StmtPtr parse_macro() {
    const Token& open = toks_[stmt_begin_];
    auto s = make<Stmt>(cur());
    s->kind = StmtKind::Macro;
    advance();
    s->targets.push_back(expect_name("a macro name"));
    expect_op("(");
    while (!is_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string pname = expect_name("a parameter name");
      ExprPtr def;
      if (skip_op("=")) def = parse_expression(true);
      s->params.emplace_back(std::move(pname), std::move(def));
    }
    expect_op(")");
    expect_block_end();
    std::string found;
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;  // break/continue cannot cross a macro boundary
    s->body = subparse({"endmacro"}, found, &open, "macro");
    loop_depth_ = saved_loop_depth;
    if (cur().type == Tok::Name && cur().value == s->targets[0]) advance();
    expect_block_end();
    return s;
  }

  StmtPtr parse_simple_block(StmtKind kind, const char* end) {
    const Token& open = toks_[stmt_begin_];
    auto s = make<Stmt>(cur());
    s->kind = kind;
    std::string name = cur().value;
    advance();
    expect_block_end();
    std::string found;
    s->body = subparse({end}, found, &open, name);
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block() {
    const Token& open = toks_[stmt_begin_];
    auto s = make<Stmt>(cur());
    s->kind = StmtKind::FilterBlock;
    advance();
    s->filters.push_back(parse_filter(nullptr));
    while (skip_op("|")) s->filters.push_back(parse_filter(nullptr));
    expect_block_end();
    std::string found;
    s->body = subparse({"endfilter"}, found, &open, "filter");
    expect_block_end();
    return s;
  }

  // ---- expressions ----

  bool tuple_end(const std::vector<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == Tok::VarEnd || t.type == Tok::BlockEnd || t.type == Tok::Eof) return true;
    if (t.type == Tok::Op && t.value == ")") return true;
    if (t.type == Tok::Name)
      for (const auto& e : extra_end)
        if (t.value == e) return true;
    return false;
  }

  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens, const std::vector<std::string>& extra_end) {
    const Token& start = cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(","))
        is_tuple = true;
      else
        break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail(cur(), str_cat("expected an expression, got ", describe(cur())));
    }
    auto e = make_expr(ExprKind::Tuple, start);
    e->items = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    ExprPtr expr1 = parse_or();
    while (is_name("if")) {
      const Token& at = cur();
      advance();
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (skip_name("else")) other = parse_condexpr();
      auto e = make_expr(ExprKind::CondExpr, at);
      e->a = std::move(expr1);
      e->b = std::move(cond);
      e->c = std::move(other);
      expr1 = std::move(e);
    }
    return expr1;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const Token& at = cur();
      advance();
      auto e = make_expr(ExprKind::Or, at);
      e->a = std::move(left);
      e->b = parse_and();
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const Token& at = cur();
      advance();
      auto e = make_expr(ExprKind::And, at);
      e->a = std::move(left);
      e->b = parse_not();
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(this);
      const Token& at = cur();
      advance();
      auto e = make_expr(ExprKind::Not, at);
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& start = cur();
    ExprPtr expr = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::Op && (t.value == "==" || t.value == "!=" || t.value == "<" || t.value == "<=" ||
                                t.value == ">" || t.value == ">=")) {
        ops.push_back(t.value);
        advance();
      } else if (is_name("in")) {
        ops.push_back("in");
        advance();
      } else if (is_name("not") && peek().type == Tok::Name && peek().value == "in") {
        ops.push_back("not in");
        advance();
        advance();
      } else {
        break;
      }
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return expr;
    auto e = make_expr(ExprKind::Compare, start);
    e->a = std::move(expr);
    e->ops = std::move(ops);
    e->items = std::move(operands);
    return e;
  }

  ExprPtr binary(ExprPtr left, const Token& at, const std::string& op, ExprPtr right) {
    auto e = make_expr(ExprKind::Binary, at);
    e->name = op;
    e->a = std::move(left);
    e->b = std::move(right);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = cur();
      advance();
      left = binary(std::move(left), at, at.value, parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    const Token& start = cur();
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto e = make_expr(ExprKind::Concat, start);
    e->items.push_back(std::move(first));
    while (skip_op("~")) e->items.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = cur();
      advance();
      left = binary(std::move(left), at, at.value, parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& at = cur();
      advance();
      left = binary(std::move(left), at, "**", parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(this);
    const Token& at = cur();
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      advance();
      node = make_expr(at.value == "-" ? ExprKind::Neg : ExprKind::Pos, at);
      node->a = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr literal(const Token& at, Value v) {
    auto e = make_expr(ExprKind::Literal, at);
    e->literal = std::move(v);
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case Tok::Name: {
        advance();
        if (t.value == "true" || t.value == "True") return literal(t, Value(true));
        if (t.value == "false" || t.value == "False") return literal(t, Value(false));
        if (t.value == "none" || t.value == "None") return literal(t, Value::none());
        auto e = make_expr(ExprKind::Name, t);
        e->name = t.value;
        return e;
      }
      case Tok::String: {
        std::string s = t.value;
        advance();
        while (cur().type == Tok::String) {  // adjacent literals concatenate, as in Python
          s += cur().value;
          advance();
        }
        return literal(t, Value(std::move(s)));
      }
      case Tok::Int:
        advance();
        return literal(t, Value(t.ival));
      case Tok::Float:
        advance();
        return literal(t, Value(t.fval));
      case Tok::Op:
        if (t.value == "(") {
          advance();
          ExprPtr e = parse_tuple(true, true, {});
          expect_op(")");
          return e;
        }
        if (t.value == "[") return parse_list();
        if (t.value == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail(t, str_cat("unexpected ", describe(t), ", expected an expression"));
  }

  ExprPtr parse_list() {
    auto e = make_expr(ExprKind::List, cur());
    expect_op("[");
    while (!is_op("]")) {
      if (!e->items.empty()) expect_op(",");
      if (is_op("]")) break;
      e->items.push_back(parse_expression(true));
    }
    expect_op("]");
    return e;
  }

  ExprPtr parse_dict() {
    auto e = make_expr(ExprKind::Dict, cur());
    expect_op("{");
    while (!is_op("}")) {
      if (!e->items.empty()) expect_op(",");
      if (is_op("}")) break;
      e->items.push_back(parse_expression(true));
      expect_op(":");
      e->items.push_back(parse_expression(true));
    }
    expect_op("}");
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("["))
        node = parse_subscript(std::move(node));
      else if (is_op("("))
        node = parse_call(std::move(node));
      else
        return node;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        advance();
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& at = cur();
    if (skip_op(".")) {
      const Token& t = cur();
      if (t.type == Tok::Name) {
        advance();
        auto e = make_expr(ExprKind::GetAttr, at);
        e->a = std::move(node);
        e->name = t.value;
        return e;
      }
      if (t.type == Tok::Int) {  // foo.0 is foo[0]
        advance();
        auto e = make_expr(ExprKind::GetItem, at);
        e->a = std::move(node);
        e->b = literal(t, Value(t.ival));
        return e;
      }
      fail_expected("an attribute name after '.'");
    }
    expect_op("[");
    // Either an index expression or a slice start:stop:step with optional parts.
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (true) {
      if (is_op(":")) {
        advance();
        is_slice = true;
        if (++part > 2) fail(cur(), "too many ':' in slice");
        continue;
      }
      if (is_op("]")) break;
      if (parts[part]) fail_expected("']'");
      parts[part] = parse_expression(true);
      if (!is_slice && part == 0 && is_op(",")) {  // x[a, b] indexes with a tuple (never found: undefined)
        auto tuple = make_expr(ExprKind::Tuple, cur());
        tuple->items.push_back(std::move(parts[0]));
        while (skip_op(",") && !is_op("]")) tuple->items.push_back(parse_expression(true));
        parts[0] = std::move(tuple);
        break;
      }
    }
    expect_op("]");
    if (!is_slice) {
      if (!parts[0]) fail(at, "empty subscript");
      auto e = make_expr(ExprKind::GetItem, at);
      e->a = std::move(node);
      e->b = std::move(parts[0]);
      return e;
    }
    auto e = make_expr(ExprKind::Slice, at);
    e->a = std::move(node);
    for (auto& p : parts) e->items.push_back(std::move(p));
    return e;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      if (is_op(")")) break;
      first = false;
      if (is_op("*") || is_op("**")) fail(cur(), "*args and **kwargs in calls are not supported");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().value == "=") {
        std::string key = cur().value;
        advance();
        advance();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail(cur(), "positional argument follows keyword argument");
        e.items.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make_expr(ExprKind::Call, cur());
    e->a = std::move(node);
    parse_call_args(*e);
    return e;
  }

  std::string dotted_name(const char* what) {
    std::string name = expect_name(what);
    while (is_op(".") && peek().type == Tok::Name) {
      advance();
      name += "." + cur().value;
      advance();
    }
    return name;
  }

  // After '|': name [ (args) ]. `node` is the filtered expression (null inside filter blocks).
  ExprPtr parse_filter(ExprPtr node) {
    const Token& at = cur();
    std::string name = dotted_name("a filter name");
    if (!is_known_filter(name)) fail(at, str_cat("no filter named '", name, "'"));
    auto e = make_expr(ExprKind::Filter, at);
    e->a = std::move(node);
    e->name = name;
    if (is_op("(")) parse_call_args(*e);
    return e;
  }

  ExprPtr parse_test(ExprPtr node) {
    const Token& at = cur();
    advance();  // 'is'
    bool negated = skip_name("not");
    const Token& name_tok = cur();
    std::string name = dotted_name("a test name after 'is'");
    if (!is_known_test(name)) fail(name_tok, str_cat("no test named '", name, "'"));
    auto e = make_expr(ExprKind::Test, at);
    e->a = std::move(node);
    e->name = name;
    e->negated = negated;
    const Token& t = cur();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((t.type == Tok::Name || t.type == Tok::String || t.type == Tok::Int || t.type == Tok::Float ||
                (t.type == Tok::Op && (t.value == "(" || t.value == "[" || t.value == "{"))) &&
               !(t.type == Tok::Name && (t.value == "else" || t.value == "or" || t.value == "and"))) {
      if (is_name("is")) fail(t, "you cannot chain multiple tests with 'is'");
      e->items.push_back(parse_postfix(parse_primary()));  // `x is divisibleby 3`, `x is sameas none`
    }
    return e;
  }

  std::vector<Token> toks_;
  const SourceMap& map_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  size_t stmt_begin_ = 0;  // index of the '{%' token of the statement being parsed
};

}  // namespace

std::unique_ptr<Template> parse_template(const std::string& source) {
  Lexer lexer(source);
  std::vector<Token> toks = lexer.run();
  Parser parser(std::move(toks), lexer.map());
  return parser.run();
}

}  // namespace iris::text::jinja
