// Jinja values: Python's str()/repr()/==/</in/json.dumps semantics over the interpreter's value types.
#include "text/jinja_value.h"

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "tensor/error.h"

namespace iris::text::jinja {

// ---- Dict / Value basics ----

const Value* Dict::find(std::string_view key) const {
  for (const auto& kv : items)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Value* Dict::find(std::string_view key) {
  for (auto& kv : items)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

void Dict::set(const std::string& key, Value v) {
  if (Value* slot = find(key)) {
    *slot = std::move(v);
  } else {
    items.emplace_back(key, std::move(v));
  }
}

namespace {
thread_local CycleCollector* active_collector = nullptr;
}  // namespace

CycleCollector::CycleCollector() : outer_(active_collector) {
  active_collector = this;
}

CycleCollector::~CycleCollector() {
  active_collector = outer_;
  // Clearing one container can free others; their weak pointers then simply fail to lock.
  for (auto& w : lists_)
    if (auto l = w.lock()) l->items.clear();
  for (auto& w : dicts_)
    if (auto d = w.lock()) d->items.clear();
}

void CycleCollector::track(const ListPtr& l) {
  lists_.push_back(l);
  if (lists_.size() + dicts_.size() >= next_compact_) compact();
}

void CycleCollector::track(const DictPtr& d) {
  dicts_.push_back(d);
  if (lists_.size() + dicts_.size() >= next_compact_) compact();
}

// Drops expired entries so a long render (a loop object per iteration) keeps only live containers recorded.
void CycleCollector::compact() {
  std::erase_if(lists_, [](const auto& w) { return w.expired(); });
  std::erase_if(dicts_, [](const auto& w) { return w.expired(); });
  next_compact_ = std::max<size_t>(4096, 2 * (lists_.size() + dicts_.size()));
}

Value Value::list(std::vector<Value> items, bool tuple) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->tuple = tuple;
  if (active_collector) active_collector->track(l);
  return Value(std::move(l));
}

Value Value::dict(DictKind kind) {
  auto d = std::make_shared<Dict>();
  d->kind = kind;
  if (active_collector) active_collector->track(d);
  return Value(std::move(d));
}

Value Value::function(std::string name, std::function<Value(CallArgs&)> fn) {
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->fn = std::move(fn);
  return Value(std::move(c));
}

double Value::to_double() const {
  switch (kind()) {
    case Kind::Bool:
      return as_bool() ? 1.0 : 0.0;
    case Kind::Int:
      return double(as_int());
    case Kind::Float:
      return as_float();
    default:
      IRIS_ASSERT(false);
  }
  return 0.0;
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return as_bool();
    case Kind::Int:
      return as_int() != 0;
    case Kind::Float:
      return as_float() != 0.0;
    case Kind::String:
      return !str().empty();
    case Kind::List:
      return !list_ref().items.empty();
    case Kind::Dict:
      return dict_ref().kind != DictKind::Plain || !dict_ref().items.empty();
    case Kind::Callable:
      return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind()) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::List:
      return list_ref().tuple ? "tuple" : "list";
    case Kind::Dict:
      switch (dict_ref().kind) {
        case DictKind::Plain:
          return "dict";
        case DictKind::Namespace:
          return "Namespace";
        case DictKind::Loop:
          return "LoopContext";
      }
      break;
    case Kind::Callable:
      return "function";
  }
  return "object";
}

// ---- JSON conversion ----

namespace {

template <typename Json>
Value from_json_impl(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u <= uint64_t(INT64_MAX)) return Value(int64_t(u));
      return Value(double(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json_impl(e));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Value d = Value::dict();
      auto& items = d.dict_ref().items;
      items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(it.key(), from_json_impl(it.value()));
      return d;
    }
    case nlohmann::json::value_t::binary:
    case nlohmann::json::value_t::discarded:
      break;
  }
  throw Error("chat template: unsupported JSON value type in the context (binary or discarded)");
}

}  // namespace

Value from_json(const nlohmann::json& j) {
  return from_json_impl(j);
}
Value from_json(const nlohmann::ordered_json& j) {
  return from_json_impl(j);
}

// ---- UTF-8 ----

// Invalid bytes decode to U+DC80..U+DCFF (Python's surrogateescape) and encode back to the same byte.
std::vector<char32_t> utf8_decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp = -1;
    utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                          utf8proc_ssize_t(s.size() - i), &cp);
    if (n <= 0 || cp < 0) {
      out.push_back(char32_t(0xDC00 + uint8_t(s[i])));
      ++i;
    } else {
      out.push_back(char32_t(cp));
      i += size_t(n);
    }
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp >= 0xDC80 && cp <= 0xDCFF) {
    out.push_back(char(cp - 0xDC00));
    return;
  }
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(utf8proc_int32_t(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), size_t(n));
}

std::string utf8_encode(const std::u32string& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) utf8_append(out, c);
  return out;
}

int64_t utf8_length(std::string_view s) {
  // Fast path: count bytes that are not continuation bytes; exact for valid UTF-8.
  bool ascii = true;
  for (unsigned char c : s)
    if (c >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return int64_t(s.size());
  return int64_t(utf8_decode(s).size());
}

bool py_isspace(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x1C:
    case 0x1D:
    case 0x1E:
    case 0x1F:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

namespace {

template <typename F>
std::string map_code_points(std::string_view s, F f) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : utf8_decode(s)) utf8_append(out, f(c));
  return out;
}

}  // namespace

// Simple (one-to-one) case mapping; Python uses the full mapping, which differs for a few letters such as
// 'ß'.
std::string py_upper(std::string_view s) {
  return map_code_points(s, [](char32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') ? char32_t(c - 32) : c;
    if (c >= 0xDC80 && c <= 0xDCFF) return c;
    return char32_t(utf8proc_toupper(utf8proc_int32_t(c)));
  });
}

std::string py_lower(std::string_view s) {
  return map_code_points(s, [](char32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? char32_t(c + 32) : c;
    if (c >= 0xDC80 && c <= 0xDCFF) return c;
    return char32_t(utf8proc_tolower(utf8proc_int32_t(c)));
  });
}

// ---- str() / repr() ----

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits from to_chars, laid out the way Python's repr does: positional notation when
  // the decimal exponent is in [-4, 16), scientific otherwise.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp10 = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  int n = int(digits.size());
  int decpt = exp10 + 1;  // value = 0.DIGITS * 10^decpt
  std::string out = neg ? "-" : "";
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(size_t(-decpt), '0') + digits;
    } else if (decpt >= n) {
      out += digits + std::string(size_t(decpt - n), '0') + ".0";
    } else {
      out += digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
    }
  } else {
    out += digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    int e = decpt - 1;
    char ebuf[16];
    std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    out += ebuf;
  }
  return out;
}

namespace {

bool is_printable(char32_t c) {
  if (c < 0x20 || c == 0x7F) return false;
  if (c >= 0x80 && c <= 0xA0) return false;  // C1 controls and NBSP are escaped by repr
  if (c >= 0xDC80 && c <= 0xDCFF) return false;
  utf8proc_category_t cat = utf8proc_category(utf8proc_int32_t(c));
  switch (cat) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return c == ' ';
    default:
      return true;
  }
}

std::string string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (char32_t c : utf8_decode(s)) {
    if (c == char32_t(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(char(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c >= 0xDC80 && c <= 0xDCFF) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "\\udc%02x", unsigned(c - 0xDC00) & 0xFFu);
      out += buf;
    } else if (!is_printable(c)) {
      char buf[16];
      if (c < 0x100)
        std::snprintf(buf, sizeof(buf), "\\x%02x", unsigned(c));
      else if (c < 0x10000)
        std::snprintf(buf, sizeof(buf), "\\u%04x", unsigned(c));
      else
        std::snprintf(buf, sizeof(buf), "\\U%08x", unsigned(c));
      out += buf;
    } else {
      utf8_append(out, c);
    }
  }
  out.push_back(q);
  return out;
}

}  // namespace

namespace {

// Lists and dicts are shared by reference, so a template can make one contain itself (l.append(l)); these
// depth limits turn that into an error instead of unbounded recursion.
constexpr int kMaxNesting = 256;

std::string repr_at(const Value& v, int depth);

}  // namespace

std::string repr(const Value& v) {
  return repr_at(v, 0);
}

namespace {

std::string repr_at(const Value& v, int depth) {
  IRIS_CHECK(depth < kMaxNesting, "value nested too deeply (or contains itself)");
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return "Undefined";  // Jinja's Undefined.__repr__ (str() of it is "")
    case Value::Kind::String:
      return string_repr(v.str());
    case Value::Kind::List: {
      const List& l = v.list_ref();
      std::string out = l.tuple ? "(" : "[";
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        out += repr_at(l.items[i], depth + 1);
      }
      if (l.tuple && l.items.size() == 1) out += ",";
      out += l.tuple ? ")" : "]";
      return out;
    }
    case Value::Kind::Dict: {
      const Dict& d = v.dict_ref();
      std::string out = "{";
      for (size_t i = 0; i < d.items.size(); ++i) {
        if (i) out += ", ";
        out += string_repr(d.items[i].first) + ": " + repr_at(d.items[i].second, depth + 1);
      }
      out += "}";
      if (d.kind == DictKind::Namespace) return "<Namespace " + out + ">";
      if (d.kind == DictKind::Loop) return "<LoopContext>";
      return out;
    }
    default:
      return to_str(v);
  }
}

}  // namespace

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return "";
    case Value::Kind::None:
      return "None";
    case Value::Kind::Bool:
      return v.as_bool() ? "True" : "False";
    case Value::Kind::Int:
      return std::to_string(v.as_int());
    case Value::Kind::Float:
      return float_repr(v.as_float());
    case Value::Kind::String:
      return v.str();
    case Value::Kind::List:
    case Value::Kind::Dict:
      return repr(v);
    case Value::Kind::Callable:
      return "<function " + v.callable()->name + ">";
  }
  return "";
}

// ---- comparisons ----

namespace {

bool equals_at(const Value& a, const Value& b, int depth) {
  IRIS_CHECK(depth < kMaxNesting, "value nested too deeply (or contains itself)");
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.to_double() == b.to_double();
    auto as_i = [](const Value& x) { return x.is_bool() ? int64_t(x.as_bool()) : x.as_int(); };
    return as_i(a) == as_i(b);
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return true;
    case Value::Kind::String:
      return a.str() == b.str();
    case Value::Kind::List: {
      const auto& x = a.list_ref().items;
      const auto& y = b.list_ref().items;
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equals_at(x[i], y[i], depth + 1)) return false;
      return true;
    }
    case Value::Kind::Dict: {
      const Dict& x = a.dict_ref();
      const Dict& y = b.dict_ref();
      if (x.kind != DictKind::Plain || y.kind != DictKind::Plain) return a.dict_ptr() == b.dict_ptr();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& kv : x.items) {
        const Value* other = y.find(kv.first);
        if (!other || !equals_at(kv.second, *other, depth + 1)) return false;
      }
      return true;
    }
    case Value::Kind::Callable:
      return a.callable() == b.callable();
    default:
      return false;
  }
}

int compare_at(const Value& a, const Value& b, int depth) {
  IRIS_CHECK(depth < kMaxNesting, "value nested too deeply (or contains itself)");
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) {
      int64_t x = a.is_bool() ? int64_t(a.as_bool()) : a.as_int();
      int64_t y = b.is_bool() ? int64_t(b.as_bool()) : b.as_int();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    double x = a.to_double(), y = b.to_double();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    // Byte order of valid UTF-8 is code point order, which is Python's string order.
    int c = a.str().compare(b.str());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list()) {
    const auto& x = a.list_ref().items;
    const auto& y = b.list_ref().items;
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      if (equals_at(x[i], y[i], depth + 1)) continue;
      return compare_at(x[i], y[i], depth + 1);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  throw Error(
      str_cat("'<' not supported between instances of '", a.type_name(), "' and '", b.type_name(), "'"));
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  return equals_at(a, b, 0);
}
int compare(const Value& a, const Value& b) {
  return compare_at(a, b, 0);
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::String:
      if (!item.is_string())
        throw Error(str_cat("'in <string>' requires string as left operand, not ", item.type_name()));
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::List:
      for (const Value& x : container.list_ref().items)
        if (equals(x, item)) return true;
      return false;
    case Value::Kind::Dict:
      return item.is_string() && container.dict_ref().find(item.str()) != nullptr;
    case Value::Kind::Undefined:
      return false;
    default:
      throw Error(str_cat("argument of type '", container.type_name(), "' is not iterable"));
  }
}

// ---- json.dumps ----

namespace {

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  auto hex4 = [&out](unsigned v) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "\\u%04x", v & 0xFFFFu);
    out += buf;
  };
  for (char32_t c : utf8_decode(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          hex4(unsigned(c));
        } else if (ensure_ascii && c >= 0x80) {
          if (c >= 0x10000) {
            char32_t v = c - 0x10000;
            hex4(unsigned(0xD800 + (v >> 10)));
            hex4(unsigned(0xDC00 + (v & 0x3FF)));
          } else {
            hex4(unsigned(c));
          }
        } else {
          utf8_append(out, c);
        }
    }
  }
  out.push_back('"');
}

void json_value(std::string& out, const Value& v, const JsonOptions& opt, int depth) {
  IRIS_CHECK(depth < kMaxNesting, "tojson: value nested too deeply (or contains itself)");
  const std::string item_sep = !opt.item_sep.empty() ? opt.item_sep : (opt.indent >= 0 ? "," : ", ");
  auto newline = [&](int d) {
    if (opt.indent < 0) return;
    out.push_back('\n');
    out.append(size_t(opt.indent) * size_t(d), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::None:
      out += "null";
      return;
    case Value::Kind::Bool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::Int:
      out += std::to_string(v.as_int());
      return;
    case Value::Kind::Float: {
      double d = v.as_float();
      if (std::isnan(d))
        out += "NaN";
      else if (std::isinf(d))
        out += d > 0 ? "Infinity" : "-Infinity";
      else
        out += float_repr(d);
      return;
    }
    case Value::Kind::String:
      json_string(out, v.str(), opt.ensure_ascii);
      return;
    case Value::Kind::List: {
      const auto& items = v.list_ref().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_value(out, items[i], opt, depth + 1);
      }
      newline(depth);
      out.push_back(']');
      return;
    }
    case Value::Kind::Dict: {
      const Dict& d = v.dict_ref();
      IRIS_CHECK(d.kind == DictKind::Plain, "tojson: Object of type ", v.type_name(),
                 " is not JSON serializable");
      if (d.items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : d.items) items.push_back(&kv);
      if (opt.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out.push_back('{');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_string(out, items[i]->first, opt.ensure_ascii);
        out += opt.key_sep;
        json_value(out, items[i]->second, opt, depth + 1);
      }
      newline(depth);
      out.push_back('}');
      return;
    }
    case Value::Kind::Undefined:
      throw Error("tojson: Object of type Undefined is not JSON serializable" +
                  (v.undefined_hint().empty() ? std::string() : " (" + v.undefined_hint() + ")"));
    case Value::Kind::Callable:
      throw Error("tojson: Object of type function is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_value(out, v, opt, 0);
  return out;
}

}  // namespace iris::text::jinja
