// Jinja builtins: the filters and tests of jinja2/filters.py and jinja2/tests.py that chat templates use,
// Python's str/list/dict methods, Python's arithmetic, and the globals of transformers' chat-template
// environment.
#include "text/jinja_builtins.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <optional>
#include <unordered_map>

#include "tensor/error.h"
#include "text/jinja.h"
#include "text/jinja_ast.h"
#include "text/jinja_pystr.h"

namespace iris::text::jinja {
namespace {

constexpr int64_t kMaxRange = 100000;  // Jinja's sandbox limit for range()
constexpr size_t kMaxStringRepeat = size_t(1) << 26;

// ---- argument binding ----

// Binds positional and keyword arguments to a builtin's parameter names, as Python does.
class Args {
 public:
  Args(const std::string& fname, CallArgs& raw, std::initializer_list<const char*> params,
       size_t skip_pos = 0)
      : fname_(fname), vals_(params.size()) {
    std::vector<const char*> names(params);
    size_t npos = raw.pos.size() - std::min(skip_pos, raw.pos.size());
    IRIS_CHECK(npos <= names.size(), fname, "() takes at most ", names.size(), " positional arguments (",
               npos, " given)");
    for (size_t i = 0; i < npos; ++i) vals_[i] = raw.pos[skip_pos + i];
    for (auto& kv : raw.kw) {
      size_t k = 0;
      while (k < names.size() && kv.first != names[k]) ++k;
      IRIS_CHECK(k < names.size(), fname, "() got an unexpected keyword argument '", kv.first, "'");
      IRIS_CHECK(!vals_[k], fname, "() got multiple values for argument '", kv.first, "'");
      vals_[k] = kv.second;
    }
  }
  bool has(size_t i) const { return vals_[i].has_value() && !vals_[i]->is_undefined(); }
  const Value& at(size_t i) const { return *vals_[i]; }
  Value get(size_t i, Value def = Value::none()) const { return has(i) ? *vals_[i] : def; }
  bool flag(size_t i, bool def) const { return has(i) ? vals_[i]->truthy() : def; }
  int64_t integer(size_t i, int64_t def) const {
    if (!has(i)) return def;
    const Value& v = *vals_[i];
    if (v.is_int()) return v.as_int();
    if (v.is_bool()) return v.as_bool();
    throw Error(str_cat(fname_, "(): expected an integer argument, got ", v.type_name()));
  }
  std::string string(size_t i, const std::string& def) const {
    if (!has(i) || vals_[i]->is_none()) return def;
    IRIS_CHECK(vals_[i]->is_string(), fname_, "(): expected a string argument, got ", vals_[i]->type_name());
    return vals_[i]->str();
  }
  void require(size_t i, const char* name) const {
    IRIS_CHECK(vals_[i].has_value(), fname_, "() missing required argument '", name, "'");
  }

 private:
  std::string fname_;
  std::vector<std::optional<Value>> vals_;
};

// ---- numbers ----

int64_t as_index_int(const Value& v, const char* what) {
  if (v.is_int()) return v.as_int();
  if (v.is_bool()) return v.as_bool();
  throw Error(str_cat(what, " indices must be integers, not ", v.type_name()));
}

std::optional<int64_t> parse_int(const std::string& text, int base) {
  std::string s = py_strip(text, nullptr, true, true);
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  if (base == 16 && i + 1 < s.size() && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) i += 2;
  if (i >= s.size()) return std::nullopt;
  int64_t v = 0;
  bool prev_digit = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '_' && prev_digit && i + 1 < s.size()) {
      prev_digit = false;
      continue;
    }
    int d = std::isdigit(static_cast<unsigned char>(c))   ? c - '0'
            : std::isalpha(static_cast<unsigned char>(c)) ? std::tolower(c) - 'a' + 10
                                                          : 99;
    if (d >= base) return std::nullopt;
    if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v)) return std::nullopt;
    prev_digit = true;
  }
  if (!prev_digit) return std::nullopt;
  return neg ? -v : v;
}

std::optional<double> parse_float(const std::string& text) {
  std::string s = py_strip(text, nullptr, true, true);
  if (s.empty() || s.find_first_of("xXpP_") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return d;
}

Value to_int_value(double d) {
  IRIS_CHECK(std::isfinite(d), "cannot convert float ", float_repr(d), " to integer");
  IRIS_CHECK(std::fabs(d) < 9.2e18, "integer ", float_repr(d), " is too large");
  return Value(int64_t(std::trunc(d)));
}

double py_round(double v, int64_t ndigits) {
  if (!std::isfinite(v)) return v;
  if (ndigits >= 0) {
    // printf rounds the exact binary value half-to-even, which is what Python's round() does.
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", int(std::min<int64_t>(ndigits, 300)), v);
    return std::strtod(buf, nullptr);
  }
  double p = std::pow(10.0, double(-ndigits));
  return std::nearbyint(v / p) * p;
}

// ---- sequences ----

Value make_list(std::vector<Value> items) {
  return Value::list(std::move(items));
}

Value pair(const std::string& k, const Value& v) {
  return Value::list({Value(k), v}, true);
}

// Jinja's make_attrgetter: "a.b.0" looks up each part with getitem (integers as indices).
Value attr_path(const Value& item, const std::string& path) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
    cur = numeric ? get_item(cur, Value(int64_t(std::stoll(part)))) : get_item(cur, Value(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// Sort/unique/min/max key: the attribute, lower-cased when strings compare case-insensitively.
Value sort_key(const Value& item, const std::string& attribute, bool case_sensitive) {
  Value v = attribute.empty() ? item : attr_path(item, attribute);
  if (!case_sensitive && v.is_string()) return Value(py_lower(v.str()));
  return v;
}

int64_t py_len(const Value& v, const char* what) {
  switch (v.kind()) {
    case Value::Kind::String:
      return utf8_length(v.str());
    case Value::Kind::List:
      return int64_t(v.list_ref().items.size());
    case Value::Kind::Dict:
      IRIS_CHECK(v.dict_ref().kind == DictKind::Plain, what, ": object of type '", v.type_name(),
                 "' has no len()");
      return int64_t(v.dict_ref().items.size());
    case Value::Kind::Undefined:
      return 0;
    default:
      throw Error(str_cat(what, ": object of type '", v.type_name(), "' has no len()"));
  }
}

// select/reject/selectattr/rejectattr: raw.pos[0] is the input, then (attr), then the test name and its args.
Value select_impl(const Value& input, CallArgs& raw, bool by_attr, bool keep, const char* fname) {
  size_t i = 0;
  std::string attribute;
  if (by_attr) {
    IRIS_CHECK(!raw.pos.empty(), fname, "() requires an attribute name");
    attribute = need_str(raw.pos[0], fname);
    i = 1;
  }
  std::string test;
  CallArgs test_args;
  if (i < raw.pos.size()) {
    test = need_str(raw.pos[i], fname);
    IRIS_CHECK(is_known_test(test), fname, "(): no test named '", test, "'");
    test_args.pos.assign(raw.pos.begin() + long(i + 1), raw.pos.end());
  }
  test_args.kw = raw.kw;
  std::vector<Value> out;
  for (const Value& item : iterate(input)) {
    Value v = by_attr ? attr_path(item, attribute) : item;
    bool ok;
    if (test.empty()) {
      ok = v.truthy();
    } else {
      CallArgs a = test_args;
      ok = apply_test(test, v, a);
    }
    if (ok == keep) out.push_back(item);
  }
  return make_list(std::move(out));
}

// ---- bound methods ----

Value bind(const Value& self, const std::string& name,
           Value (*fn)(const Value&, CallArgs&, const std::string&)) {
  return Value::function(name, [self, name, fn](CallArgs& a) { return fn(self, a, name); });
}

Value string_method(const Value& self, CallArgs& raw, const std::string& name) {
  const std::string& s = self.str();
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name == "isdigit" ||
      name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" || name == "isupper" ||
      name == "splitlines") {
    IRIS_CHECK(raw.pos.empty() && raw.kw.empty(), "str.", name, "() takes no arguments");
    if (name == "upper") return Value(py_upper(s));
    if (name == "lower") return Value(py_lower(s));
    if (name == "title") return Value(py_title(s));
    if (name == "capitalize") return Value(py_capitalize(s));
    if (name == "islower") return Value(all_cased(s, false));
    if (name == "isupper") return Value(all_cased(s, true));
    if (name == "splitlines") {
      std::vector<Value> lines;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          lines.emplace_back(s.substr(start, i - start));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) lines.emplace_back(s.substr(start));
      return make_list(std::move(lines));
    }
    auto cps = utf8_decode(s);
    if (cps.empty()) return Value(false);
    for (char32_t c : cps) {
      bool ok = name == "isspace"   ? py_isspace(c)
                : name == "isdigit" ? utf8proc_category(utf8proc_int32_t(c)) == UTF8PROC_CATEGORY_ND
                : name == "isalpha" ? (utf8proc_category(utf8proc_int32_t(c)) >= UTF8PROC_CATEGORY_LU &&
                                       utf8proc_category(utf8proc_int32_t(c)) <= UTF8PROC_CATEGORY_LO)
                                    : is_alnum(c);
      if (!ok) return Value(false);
    }
    return Value(true);
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Args a("str." + name, raw, {"chars"});
    Value chars = a.get(0);
    return Value(py_strip(s, &chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    Args a("str." + name, raw, {"sep", "maxsplit"});
    Value sep = a.get(0);
    std::vector<Value> parts;
    for (auto& p : py_split(s, &sep, a.integer(1, -1), name == "rsplit")) parts.emplace_back(std::move(p));
    return make_list(std::move(parts));
  }
  if (name == "startswith" || name == "endswith") {
    Args a("str." + name, raw, {"prefix"});
    a.require(0, "prefix");
    std::vector<Value> options;
    if (a.at(0).is_list())
      options = a.at(0).list_ref().items;
    else
      options.push_back(a.at(0));
    for (const Value& o : options) {
      const std::string& p = need_str(o, ("str." + name).c_str());
      if (p.size() > s.size()) continue;
      if (name == "startswith" ? s.compare(0, p.size(), p) == 0
                               : s.compare(s.size() - p.size(), p.size(), p) == 0)
        return Value(true);
    }
    return Value(false);
  }
  if (name == "replace") {
    Args a("str.replace", raw, {"old", "new", "count"});
    a.require(0, "old");
    a.require(1, "new");
    return Value(py_replace(s, need_str(a.at(0), "replace"), need_str(a.at(1), "replace"), a.integer(2, -1)));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    Args a("str." + name, raw, {"sub"});
    a.require(0, "sub");
    const std::string& sub = need_str(a.at(0), name.c_str());
    if (name == "count") {
      if (sub.empty()) return Value(utf8_length(s) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    size_t p = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
    if (p == std::string::npos) {
      IRIS_CHECK(name == "find" || name == "rfind", "str.", name, "(): substring not found");
      return Value(int64_t(-1));
    }
    return Value(utf8_length(std::string_view(s).substr(0, p)));  // code point index
  }
  if (name == "join") {
    Args a("str.join", raw, {"iterable"});
    a.require(0, "iterable");
    std::string out;
    bool first = true;
    for (const Value& v : iterate(a.at(0))) {
      if (!first) out += s;
      first = false;
      out += need_str(v, "str.join");
    }
    return Value(out);
  }
  if (name == "format") return Value(brace_format(s, raw));
  throw Error(str_cat("'str' object has no attribute '", name, "'"));
}

Value list_method(const Value& self, CallArgs& raw, const std::string& name) {
  auto& items = self.list_ref().items;
  if (name == "append") {
    IRIS_CHECK(!self.list_ref().tuple, "'tuple' object has no attribute 'append'");
    Args a("list.append", raw, {"item"});
    a.require(0, "item");
    items.push_back(a.at(0));
    return Value::none();
  }
  if (name == "extend") {
    Args a("list.extend", raw, {"iterable"});
    a.require(0, "iterable");
    for (const Value& v : iterate(a.at(0))) items.push_back(v);
    return Value::none();
  }
  if (name == "insert") {
    Args a("list.insert", raw, {"index", "item"});
    a.require(0, "index");
    a.require(1, "item");
    int64_t n = int64_t(items.size()), i = a.integer(0, 0);
    if (i < 0) i = std::max<int64_t>(0, i + n);
    items.insert(items.begin() + long(std::min(i, n)), a.at(1));
    return Value::none();
  }
  if (name == "pop") {
    Args a("list.pop", raw, {"index"});
    IRIS_CHECK(!items.empty(), "pop from empty list");
    int64_t n = int64_t(items.size()), i = a.integer(0, -1);
    if (i < 0) i += n;
    IRIS_CHECK(i >= 0 && i < n, "pop index out of range");
    Value v = items[size_t(i)];
    items.erase(items.begin() + long(i));
    return v;
  }
  if (name == "index" || name == "count") {
    Args a("list." + name, raw, {"value"});
    a.require(0, "value");
    int64_t n = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!equals(items[i], a.at(0))) continue;
      if (name == "index") return Value(int64_t(i));
      ++n;
    }
    IRIS_CHECK(name == "count", "list.index(x): x not in list");
    return Value(n);
  }
  throw Error(str_cat("'list' object has no attribute '", name, "'"));
}

Value dict_method(const Value& self, CallArgs& raw, const std::string& name) {
  const Dict& d = self.dict_ref();
  if (name == "items" || name == "keys" || name == "values") {
    IRIS_CHECK(raw.pos.empty() && raw.kw.empty(), "dict.", name, "() takes no arguments");
    std::vector<Value> out;
    for (const auto& kv : d.items)
      out.push_back(name == "items"  ? pair(kv.first, kv.second)
                    : name == "keys" ? Value(kv.first)
                                     : kv.second);
    return make_list(std::move(out));
  }
  if (name == "get") {
    Args a("dict.get", raw, {"key", "default"});
    a.require(0, "key");
    if (a.at(0).is_string())
      if (const Value* v = d.find(a.at(0).str())) return *v;
    return a.get(1);
  }
  throw Error(str_cat("'dict' object has no attribute '", name, "'"));
}

bool is_string_method(const std::string& n) {
  static const char* names[] = {"upper",      "lower",      "strip",      "lstrip",   "rstrip",  "split",
                                "rsplit",     "splitlines", "startswith", "endswith", "replace", "title",
                                "capitalize", "find",       "rfind",      "index",    "rindex",  "count",
                                "join",       "format",     "isdigit",    "isalpha",  "isalnum", "isspace",
                                "islower",    "isupper"};
  for (const char* x : names)
    if (n == x) return true;
  return false;
}

bool is_list_method(const std::string& n) {
  return n == "append" || n == "extend" || n == "insert" || n == "pop" || n == "index" || n == "count";
}

bool is_dict_method(const std::string& n) {
  return n == "items" || n == "keys" || n == "values" || n == "get";
}

// ---- filters ----

using FilterFn = Value (*)(const Value& in, CallArgs& raw);

Value f_default(const Value& in, CallArgs& raw) {
  Args a("default", raw, {"default_value", "boolean"});
  Value def = a.has(0) ? a.at(0) : Value(std::string());
  bool boolean = a.flag(1, false);
  if (in.is_undefined() || (boolean && !in.truthy())) return def;
  return in;
}

Value f_length(const Value& in, CallArgs& raw) {
  Args a("length", raw, {});
  return Value(py_len(in, "length"));
}

Value f_first_last(const Value& in, bool last) {
  if (in.is_string()) {
    auto cps = utf8_decode(in.str());
    if (cps.empty()) return Value::undefined("no first/last item, the string was empty");
    std::string out;
    utf8_append(out, last ? cps.back() : cps.front());
    return Value(out);
  }
  std::vector<Value> items = iterate(in);
  if (items.empty()) return Value::undefined("no first/last item, the sequence was empty");
  return last ? items.back() : items.front();
}

Value f_join(const Value& in, CallArgs& raw) {
  Args a("join", raw, {"d", "attribute"});
  std::string sep = a.has(0) ? to_str(a.at(0)) : std::string();
  std::string attribute = a.string(1, "");
  std::string out;
  bool first = true;
  for (const Value& v : iterate(in)) {
    if (!first) out += sep;
    first = false;
    out += to_str(attribute.empty() ? v : attr_path(v, attribute));
  }
  return Value(out);
}

Value f_tojson(const Value& in, CallArgs& raw) {
  // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) is json.dumps.
  Args a("tojson", raw, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions opt;
  opt.ensure_ascii = a.flag(0, false);
  opt.indent = a.has(1) && !a.at(1).is_none() ? int(a.integer(1, -1)) : -1;
  if (opt.indent < -1) opt.indent = 0;
  if (a.has(2) && !a.at(2).is_none()) {
    const Value& s = a.at(2);
    IRIS_CHECK(s.is_list() && s.list_ref().items.size() == 2,
               "tojson: separators must be an (item, key) pair");
    opt.item_sep = need_str(s.list_ref().items[0], "tojson separators");
    opt.key_sep = need_str(s.list_ref().items[1], "tojson separators");
  }
  opt.sort_keys = a.flag(3, false);
  return Value(to_json(in, opt));
}

Value f_int(const Value& in, CallArgs& raw) {
  Args a("int", raw, {"default", "base"});
  Value def = a.get(0, Value(int64_t(0)));
  int64_t base = a.integer(1, 10);
  switch (in.kind()) {
    case Value::Kind::Int:
      return in;
    case Value::Kind::Bool:
      return Value(int64_t(in.as_bool()));
    case Value::Kind::Float:
      if (std::isnan(in.as_float())) return def;
      return to_int_value(in.as_float());
    case Value::Kind::String: {
      if (auto v = parse_int(in.str(), int(base))) return Value(*v);
      if (auto d = parse_float(in.str())) {
        if (std::isnan(*d)) return def;
        return to_int_value(*d);
      }
      return def;
    }
    default:
      return def;
  }
}

Value f_float(const Value& in, CallArgs& raw) {
  Args a("float", raw, {"default"});
  Value def = a.get(0, Value(0.0));
  if (in.is_number()) return Value(in.to_double());
  if (in.is_string())
    if (auto d = parse_float(in.str())) return Value(*d);
  return def;
}

Value f_round(const Value& in, CallArgs& raw) {
  Args a("round", raw, {"precision", "method"});
  int64_t precision = a.integer(0, 0);
  std::string method = a.string(1, "common");
  IRIS_CHECK(in.is_number(), "round: expected a number, got ", in.type_name());
  if (method == "common" && !in.is_float()) {
    // Python's round() of an int stays an int; negative precision rounds half to even at 10^-precision.
    int64_t x = in.is_bool() ? int64_t(in.as_bool()) : in.as_int();
    if (precision >= 0) return Value(x);
    IRIS_CHECK(precision > -19, "round: precision out of range");
    int64_t p = 1;
    for (int64_t i = 0; i < -precision; ++i) p *= 10;
    int64_t q = x / p, r = x % p;
    if (r < 0) {
      r += p;
      --q;
    }
    if (2 * r > p || (2 * r == p && (q & 1))) ++q;
    return Value(q * p);
  }
  double v = in.to_double();
  if (method == "common") return Value(py_round(v, precision));
  double p = std::pow(10.0, double(precision));
  if (method == "ceil") return Value(std::ceil(v * p) / p);
  if (method == "floor") return Value(std::floor(v * p) / p);
  throw Error("round: method must be 'common', 'ceil' or 'floor'");
}

Value f_items(const Value& in, CallArgs& raw) {
  Args a("items", raw, {});
  if (in.is_undefined()) return make_list({});
  IRIS_CHECK(in.is_plain_dict(), "items: can only get item pairs from a mapping, not ", in.type_name());
  std::vector<Value> out;
  for (const auto& kv : in.dict_ref().items) out.push_back(pair(kv.first, kv.second));
  return make_list(std::move(out));
}

Value f_dictsort(const Value& in, CallArgs& raw) {
  Args a("dictsort", raw, {"case_sensitive", "by", "reverse"});
  bool cs = a.flag(0, false);
  std::string by = a.string(1, "key");
  IRIS_CHECK(by == "key" || by == "value", "dictsort: 'by' must be 'key' or 'value'");
  IRIS_CHECK(in.is_plain_dict(), "dictsort: expected a mapping, got ", in.type_name());
  std::vector<Value> out;
  for (const auto& kv : in.dict_ref().items) out.push_back(pair(kv.first, kv.second));
  size_t idx = by == "key" ? 0 : 1;
  std::stable_sort(out.begin(), out.end(), [&](const Value& x, const Value& y) {
    return compare(sort_key(x.list_ref().items[idx], "", cs), sort_key(y.list_ref().items[idx], "", cs)) < 0;
  });
  if (a.flag(2, false)) std::reverse(out.begin(), out.end());
  return make_list(std::move(out));
}

Value f_list(const Value& in, CallArgs& raw) {
  Args a("list", raw, {});
  return make_list(iterate(in));
}

Value f_map(const Value& in, CallArgs& raw) {
  std::vector<Value> out;
  const Value* attribute = nullptr;
  const Value* def = nullptr;
  for (auto& kv : raw.kw) {
    if (kv.first == "attribute")
      attribute = &kv.second;
    else if (kv.first == "default")
      def = &kv.second;
  }
  if (attribute) {
    IRIS_CHECK(raw.pos.empty(), "map: positional arguments are not allowed with attribute=");
    const std::string& path = need_str(*attribute, "map attribute");
    for (const Value& item : iterate(in)) {
      Value v = attr_path(item, path);
      out.push_back(v.is_undefined() && def ? *def : v);
    }
    return make_list(std::move(out));
  }
  IRIS_CHECK(!raw.pos.empty(), "map: expected a filter name or attribute=");
  std::string filter = need_str(raw.pos[0], "map");
  IRIS_CHECK(is_known_filter(filter), "map: no filter named '", filter, "'");
  CallArgs fargs;
  fargs.pos.assign(raw.pos.begin() + 1, raw.pos.end());
  fargs.kw = raw.kw;
  for (const Value& item : iterate(in)) {
    CallArgs a = fargs;
    out.push_back(apply_filter(filter, item, a));
  }
  return make_list(std::move(out));
}

Value f_sort(const Value& in, CallArgs& raw) {
  Args a("sort", raw, {"reverse", "case_sensitive", "attribute"});
  bool rev = a.flag(0, false), cs = a.flag(1, false);
  std::string attribute = a.string(2, "");
  std::vector<Value> items = iterate(in);
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) keyed.emplace_back(sort_key(v, attribute, cs), v);
  std::stable_sort(keyed.begin(), keyed.end(), [rev](const auto& x, const auto& y) {
    return rev ? compare(y.first, x.first) < 0 : compare(x.first, y.first) < 0;
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(kv.second);
  return make_list(std::move(out));
}

Value f_unique(const Value& in, CallArgs& raw) {
  Args a("unique", raw, {"case_sensitive", "attribute"});
  bool cs = a.flag(0, false);
  std::string attribute = a.string(1, "");
  std::vector<Value> out, seen;
  for (const Value& v : iterate(in)) {
    Value key = sort_key(v, attribute, cs);
    bool dup = false;
    for (const Value& s : seen)
      if (equals(s, key)) {
        dup = true;
        break;
      }
    if (dup) continue;
    seen.push_back(key);
    out.push_back(v);
  }
  return make_list(std::move(out));
}

Value f_minmax(const Value& in, CallArgs& raw, bool want_max) {
  Args a(want_max ? "max" : "min", raw, {"case_sensitive", "attribute"});
  bool cs = a.flag(0, false);
  std::string attribute = a.string(1, "");
  std::vector<Value> items = iterate(in);
  if (items.empty()) return Value::undefined("no aggregated item, the sequence was empty");
  size_t best = 0;
  Value best_key = sort_key(items[0], attribute, cs);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = sort_key(items[i], attribute, cs);
    int c = compare(k, best_key);
    if (want_max ? c > 0 : c < 0) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}

Value f_sum(const Value& in, CallArgs& raw) {
  Args a("sum", raw, {"attribute", "start"});
  std::string attribute = a.string(0, "");
  Value total = a.get(1, Value(int64_t(0)));
  for (const Value& v : iterate(in))
    total = binary_op("+", total, attribute.empty() ? v : attr_path(v, attribute));
  return total;
}

Value f_reverse(const Value& in, CallArgs& raw) {
  Args a("reverse", raw, {});
  if (in.is_string()) {
    auto cps = utf8_decode(in.str());
    std::reverse(cps.begin(), cps.end());
    return Value(utf8_encode(std::u32string(cps.begin(), cps.end())));
  }
  std::vector<Value> items = iterate(in);
  std::reverse(items.begin(), items.end());
  return make_list(std::move(items));
}

Value f_replace(const Value& in, CallArgs& raw) {
  Args a("replace", raw, {"old", "new", "count"});
  a.require(0, "old");
  a.require(1, "new");
  return Value(py_replace(to_str(in), to_str(a.at(0)), to_str(a.at(1)),
                          a.has(2) && !a.at(2).is_none() ? a.integer(2, -1) : -1));
}

Value f_trim(const Value& in, CallArgs& raw) {
  Args a("trim", raw, {"chars"});
  Value chars = a.get(0);
  return Value(py_strip(to_str(in), &chars, true, true));
}

Value f_indent(const Value& in, CallArgs& raw) {
  Args a("indent", raw, {"width", "first", "blank"});
  std::string ind = (a.has(0) && a.at(0).is_string())
                        ? a.at(0).str()
                        : std::string(size_t(std::max<int64_t>(0, a.integer(0, 4))), ' ');
  bool first = a.flag(1, false), blank = a.flag(2, false);
  std::string s = to_str(in) + "\n";
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') {
      lines.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  std::string rv;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) rv += "\n";
    bool indent_line = i > 0 && (blank || !lines[i].empty());
    rv += (indent_line ? ind : "") + lines[i];
  }
  if (first) rv = ind + rv;
  return Value(rv);
}

Value f_center(const Value& in, CallArgs& raw) {
  Args a("center", raw, {"width"});
  std::string s = to_str(in);
  int64_t width = a.integer(0, 80), len = utf8_length(s);
  if (len >= width) return Value(s);
  int64_t total = width - len;
  int64_t left = total / 2 +
                 (total & width & 1);  // Python's str.center puts the odd space on the left when width is odd
  return Value(std::string(size_t(left), ' ') + s + std::string(size_t(total - left), ' '));
}

Value f_wordcount(const Value& in, CallArgs& raw) {
  Args a("wordcount", raw, {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : utf8_decode(to_str(in))) {
    bool w = c == '_' || is_alnum(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

Value f_format(const Value& in, CallArgs& raw) {
  IRIS_CHECK(raw.kw.empty() || raw.pos.empty(),
             "format: can't handle positional and keyword arguments at the same time");
  IRIS_CHECK(raw.kw.empty(), "format: keyword arguments (%(name)s) are not supported");
  return Value(percent_format(to_str(in), raw.pos));
}

Value f_abs(const Value& in, CallArgs& raw) {
  Args a("abs", raw, {});
  if (in.is_float()) return Value(std::fabs(in.as_float()));
  if (in.is_int()) return Value(in.as_int() < 0 ? -in.as_int() : in.as_int());
  if (in.is_bool()) return Value(int64_t(in.as_bool()));
  throw Error(str_cat("abs: bad operand type '", in.type_name(), "'"));
}

Value f_batch(const Value& in, CallArgs& raw) {
  Args a("batch", raw, {"linecount", "fill_with"});
  a.require(0, "linecount");
  int64_t n = a.integer(0, 1);
  IRIS_CHECK(n > 0, "batch: linecount must be positive");
  std::vector<Value> out, cur;
  for (const Value& v : iterate(in)) {
    cur.push_back(v);
    if (int64_t(cur.size()) == n) {
      out.push_back(make_list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (a.has(1))
      while (int64_t(cur.size()) < n) cur.push_back(a.at(1));
    out.push_back(make_list(std::move(cur)));
  }
  return make_list(std::move(out));
}

Value str_filter(const Value& in, CallArgs& raw, const char* name, std::string (*fn)(std::string_view)) {
  Args a(name, raw, {});
  return Value(fn(to_str(in)));
}

const std::unordered_map<std::string, FilterFn>& filter_table() {
  static const std::unordered_map<std::string, FilterFn> table = {
      {"abs", f_abs},
      {"attr",
       [](const Value& in, CallArgs& raw) {
         Args a("attr", raw, {"name"});
         a.require(0, "name");
         return get_attr(in, need_str(a.at(0), "attr"));
       }},
      {"batch", f_batch},
      {"capitalize",
       [](const Value& in, CallArgs& raw) {
         Args a("capitalize", raw, {});
         return Value(py_capitalize(to_str(in)));
       }},
      {"center", f_center},
      {"count", f_length},
      {"d", f_default},
      {"default", f_default},
      {"dictsort", f_dictsort},
      {"e",
       [](const Value& in, CallArgs& raw) {
         Args a("escape", raw, {});
         return Value(html_escape(to_str(in)));
       }},
      {"escape",
       [](const Value& in, CallArgs& raw) {
         Args a("escape", raw, {});
         return Value(html_escape(to_str(in)));
       }},
      {"first",
       [](const Value& in, CallArgs& raw) {
         Args a("first", raw, {});
         return f_first_last(in, false);
       }},
      {"float", f_float},
      {"format", f_format},
      {"indent", f_indent},
      {"int", f_int},
      {"items", f_items},
      {"join", f_join},
      {"last",
       [](const Value& in, CallArgs& raw) {
         Args a("last", raw, {});
         return f_first_last(in, true);
       }},
      {"length", f_length},
      {"list", f_list},
      {"lower", [](const Value& in, CallArgs& raw) { return str_filter(in, raw, "lower", py_lower); }},
      {"map", f_map},
      {"max", [](const Value& in, CallArgs& raw) { return f_minmax(in, raw, true); }},
      {"min", [](const Value& in, CallArgs& raw) { return f_minmax(in, raw, false); }},
      {"reject", [](const Value& in, CallArgs& raw) { return select_impl(in, raw, false, false, "reject"); }},
      {"rejectattr",
       [](const Value& in, CallArgs& raw) { return select_impl(in, raw, true, false, "rejectattr"); }},
      {"replace", f_replace},
      {"reverse", f_reverse},
      {"round", f_round},
      {"safe",
       [](const Value& in, CallArgs& raw) {
         Args a("safe", raw, {});
         return in;
       }},
      {"select", [](const Value& in, CallArgs& raw) { return select_impl(in, raw, false, true, "select"); }},
      {"selectattr",
       [](const Value& in, CallArgs& raw) { return select_impl(in, raw, true, true, "selectattr"); }},
      {"sort", f_sort},
      {"string",
       [](const Value& in, CallArgs& raw) {
         Args a("string", raw, {});
         return Value(to_str(in));
       }},
      {"sum", f_sum},
      {"title",
       [](const Value& in, CallArgs& raw) {
         Args a("title", raw, {});
         return Value(jinja_title(to_str(in)));
       }},
      {"tojson", f_tojson},
      {"trim", f_trim},
      {"unique", f_unique},
      {"upper", [](const Value& in, CallArgs& raw) { return str_filter(in, raw, "upper", py_upper); }},
      {"wordcount", f_wordcount},
  };
  return table;
}

// ---- tests ----

using TestFn = bool (*)(const Value& v, CallArgs& raw);

bool no_args(const char* name, CallArgs& raw) {
  Args a(name, raw, {});
  return true;
}

const Value& one_arg(const char* name, CallArgs& raw) {
  IRIS_CHECK(raw.pos.size() == 1 && raw.kw.empty(), "test '", name, "' takes exactly one argument");
  return raw.pos[0];
}

bool is_int_like(const Value& v) {
  return v.is_int();
}

const std::unordered_map<std::string, TestFn>& test_table() {
  static const std::unordered_map<std::string, TestFn> table = {
      {"defined", [](const Value& v, CallArgs& r) { return no_args("defined", r) && !v.is_undefined(); }},
      {"undefined", [](const Value& v, CallArgs& r) { return no_args("undefined", r) && v.is_undefined(); }},
      {"none", [](const Value& v, CallArgs& r) { return no_args("none", r) && v.is_none(); }},
      {"boolean", [](const Value& v, CallArgs& r) { return no_args("boolean", r) && v.is_bool(); }},
      {"true", [](const Value& v, CallArgs& r) { return no_args("true", r) && v.is_bool() && v.as_bool(); }},
      {"false",
       [](const Value& v, CallArgs& r) { return no_args("false", r) && v.is_bool() && !v.as_bool(); }},
      {"integer", [](const Value& v, CallArgs& r) { return no_args("integer", r) && is_int_like(v); }},
      {"float", [](const Value& v, CallArgs& r) { return no_args("float", r) && v.is_float(); }},
      {"number", [](const Value& v, CallArgs& r) { return no_args("number", r) && v.is_number(); }},
      {"string", [](const Value& v, CallArgs& r) { return no_args("string", r) && v.is_string(); }},
      {"mapping", [](const Value& v, CallArgs& r) { return no_args("mapping", r) && v.is_plain_dict(); }},
      // Jinja's Undefined is iterable (empty) and a sequence (len 0), so these tests are true for it.
      {"iterable",
       [](const Value& v, CallArgs& r) {
         return no_args("iterable", r) &&
                (v.is_string() || v.is_list() || v.is_plain_dict() || v.is_undefined());
       }},
      {"sequence",
       [](const Value& v, CallArgs& r) {
         return no_args("sequence", r) &&
                (v.is_string() || v.is_list() || v.is_plain_dict() || v.is_undefined());
       }},
      {"callable", [](const Value& v, CallArgs& r) { return no_args("callable", r) && v.is_callable(); }},
      {"escaped", [](const Value&, CallArgs& r) { return no_args("escaped", r) && false; }},
      {"lower",
       [](const Value& v, CallArgs& r) {
         return no_args("lower", r) && v.is_string() && all_cased(v.str(), false);
       }},
      {"upper", [](const Value& v,
                   CallArgs& r) { return no_args("upper", r) && v.is_string() && all_cased(v.str(), true); }},
      {"odd",
       [](const Value& v, CallArgs& r) {
         no_args("odd", r);
         IRIS_CHECK(v.is_int() || v.is_bool(), "test 'odd' needs an integer, got ", v.type_name());
         return (v.is_bool() ? int64_t(v.as_bool()) : v.as_int()) % 2 != 0;
       }},
      {"even",
       [](const Value& v, CallArgs& r) {
         no_args("even", r);
         IRIS_CHECK(v.is_int() || v.is_bool(), "test 'even' needs an integer, got ", v.type_name());
         return (v.is_bool() ? int64_t(v.as_bool()) : v.as_int()) % 2 == 0;
       }},
      {"divisibleby",
       [](const Value& v, CallArgs& r) {
         const Value& n = one_arg("divisibleby", r);
         Value m = binary_op("%", v, n);
         return equals(m, Value(int64_t(0)));
       }},
      {"sameas",
       [](const Value& v, CallArgs& r) {
         const Value& o = one_arg("sameas", r);
         if (v.kind() != o.kind()) return false;
         if (v.is_list()) return v.list_ptr() == o.list_ptr();
         if (v.is_dict()) return v.dict_ptr() == o.dict_ptr();
         return equals(v, o);
       }},
      {"eq", [](const Value& v, CallArgs& r) { return equals(v, one_arg("eq", r)); }},
      {"equalto", [](const Value& v, CallArgs& r) { return equals(v, one_arg("equalto", r)); }},
      {"==", [](const Value& v, CallArgs& r) { return equals(v, one_arg("==", r)); }},
      {"ne", [](const Value& v, CallArgs& r) { return !equals(v, one_arg("ne", r)); }},
      {"!=", [](const Value& v, CallArgs& r) { return !equals(v, one_arg("!=", r)); }},
      {"lt", [](const Value& v, CallArgs& r) { return compare(v, one_arg("lt", r)) < 0; }},
      {"lessthan", [](const Value& v, CallArgs& r) { return compare(v, one_arg("lessthan", r)) < 0; }},
      {"<", [](const Value& v, CallArgs& r) { return compare(v, one_arg("<", r)) < 0; }},
      {"le", [](const Value& v, CallArgs& r) { return compare(v, one_arg("le", r)) <= 0; }},
      {"<=", [](const Value& v, CallArgs& r) { return compare(v, one_arg("<=", r)) <= 0; }},
      {"gt", [](const Value& v, CallArgs& r) { return compare(v, one_arg("gt", r)) > 0; }},
      {"greaterthan", [](const Value& v, CallArgs& r) { return compare(v, one_arg("greaterthan", r)) > 0; }},
      {">", [](const Value& v, CallArgs& r) { return compare(v, one_arg(">", r)) > 0; }},
      {"ge", [](const Value& v, CallArgs& r) { return compare(v, one_arg("ge", r)) >= 0; }},
      {">=", [](const Value& v, CallArgs& r) { return compare(v, one_arg(">=", r)) >= 0; }},
      {"in", [](const Value& v, CallArgs& r) { return contains(one_arg("in", r), v); }},
      {"filter",
       [](const Value& v, CallArgs& r) {
         no_args("filter", r);
         return v.is_string() && is_known_filter(v.str());
       }},
      {"test",
       [](const Value& v, CallArgs& r) {
         no_args("test", r);
         return v.is_string() && is_known_test(v.str());
       }},
  };
  return table;
}

// ---- arithmetic helpers ----

// Python ints are unbounded; iris's are 64-bit, so overflow is an error rather than a wrapped value.
template <typename F>
Value checked_int(F op_with_overflow, const char* op) {
  int64_t r = 0;
  IRIS_CHECK(!op_with_overflow(r), "integer overflow in '", op, "'");
  return Value(r);
}

int64_t int_of(const Value& v) {
  return v.is_bool() ? int64_t(v.as_bool()) : v.as_int();
}

[[noreturn]] void operand_error(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined())
    throw Error(a.undefined_hint().empty() ? std::string("undefined value used in an expression")
                                           : a.undefined_hint());
  if (b.is_undefined())
    throw Error(b.undefined_hint().empty() ? std::string("undefined value used in an expression")
                                           : b.undefined_hint());
  throw Error(
      str_cat("unsupported operand type(s) for ", op, ": '", a.type_name(), "' and '", b.type_name(), "'"));
}

Value repeat(const Value& seq, int64_t n) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    IRIS_CHECK(seq.str().size() * size_t(n) <= kMaxStringRepeat, "string repetition result too large");
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return Value(out);
  }
  const auto& items = seq.list_ref().items;
  IRIS_CHECK(items.size() * size_t(n) <= kMaxStringRepeat, "list repetition result too large");
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::list(std::move(out), seq.list_ref().tuple);
}

}  // namespace

// ---- public entry points ----

bool is_known_filter(const std::string& name) {
  return filter_table().count(name) != 0;
}
bool is_known_test(const std::string& name) {
  return test_table().count(name) != 0;
}

Value apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  auto it = filter_table().find(name);
  IRIS_CHECK(it != filter_table().end(), "no filter named '", name, "'");
  return it->second(input, args);
}

bool apply_test(const std::string& name, const Value& input, CallArgs& args) {
  auto it = test_table().find(name);
  IRIS_CHECK(it != test_table().end(), "no test named '", name, "'");
  return it->second(input, args);
}

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::Undefined:
      return obj;
    case Value::Kind::String:
      if (is_string_method(name)) return bind(obj, name, string_method);
      break;
    case Value::Kind::List:
      if (is_list_method(name)) return bind(obj, name, list_method);
      break;
    case Value::Kind::Dict: {
      const Dict& d = obj.dict_ref();
      if (d.kind == DictKind::Plain && is_dict_method(name)) return bind(obj, name, dict_method);
      if (const Value* v = d.find(name)) return *v;
      if (d.kind == DictKind::Plain)
        return Value::undefined(str_cat("'dict object' has no attribute '", name, "'"));
      break;
    }
    default:
      break;
  }
  return Value::undefined(str_cat("'", obj.type_name(), " object' has no attribute '", name, "'"));
}

namespace {

// Python's slice.indices(): the visited positions for (start, stop, step) over a sequence of length n.
std::vector<int64_t> slice_indices(int64_t n, const Value* start, const Value* stop, const Value* step) {
  auto given = [](const Value* v) { return v && !v->is_none() && !v->is_undefined(); };
  int64_t st = given(step) ? as_index_int(*step, "slice") : 1;
  IRIS_CHECK(st != 0, "slice step cannot be zero");
  auto clamp = [&](const Value* v, int64_t def) {
    if (!given(v)) return def;
    int64_t i = as_index_int(*v, "slice");
    if (i < 0) i += n;
    if (st > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t b = clamp(start, st > 0 ? 0 : n - 1);
  int64_t e = clamp(stop, st > 0 ? n : -1);
  std::vector<int64_t> out;
  if (st > 0)
    for (int64_t i = b; i < e; i += st) out.push_back(i);
  else
    for (int64_t i = b; i > e; i += st) out.push_back(i);
  return out;
}

}  // namespace

Value get_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::Undefined:
      return obj;
    case Value::Kind::Dict:
      if (key.is_string()) {
        if (const Value* v = obj.dict_ref().find(key.str())) return *v;
        return get_attr(obj, key.str());
      }
      return Value::undefined(str_cat("'dict object' has no key ", repr(key)));
    case Value::Kind::List:
    case Value::Kind::String: {
      if (key.is_string()) return get_attr(obj, key.str());
      if (!key.is_int() && !key.is_bool()) break;
      int64_t i = int_of(key);
      if (obj.is_list()) {
        const auto& items = obj.list_ref().items;
        int64_t n = int64_t(items.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined(str_cat("list index ", int_of(key), " out of range"));
        return items[size_t(i)];
      }
      auto cps = utf8_decode(obj.str());
      int64_t n = int64_t(cps.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(str_cat("string index ", int_of(key), " out of range"));
      std::string out;
      utf8_append(out, cps[size_t(i)]);
      return Value(out);
    }
    default:
      break;
  }
  return Value::undefined(str_cat("'", obj.type_name(), " object' has no item ", repr(key)));
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step) {
  if (obj.is_undefined()) return obj;
  if (obj.is_list()) {
    const auto& items = obj.list_ref().items;
    std::vector<Value> out;
    for (int64_t i : slice_indices(int64_t(items.size()), start, stop, step)) out.push_back(items[size_t(i)]);
    return Value::list(std::move(out), obj.list_ref().tuple);
  }
  if (obj.is_string()) {
    auto cps = utf8_decode(obj.str());
    std::string out;
    for (int64_t i : slice_indices(int64_t(cps.size()), start, stop, step)) utf8_append(out, cps[size_t(i)]);
    return Value(out);
  }
  throw Error(str_cat("'", obj.type_name(), "' object is not subscriptable with a slice"));
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return {};
    case Value::Kind::List:
      return v.list_ref().items;
    case Value::Kind::Dict: {
      IRIS_CHECK(v.dict_ref().kind == DictKind::Plain, "'", v.type_name(), "' object is not iterable");
      std::vector<Value> keys;
      for (const auto& kv : v.dict_ref().items) keys.emplace_back(kv.first);
      return keys;
    }
    case Value::Kind::String: {
      std::vector<Value> out;
      for (char32_t c : utf8_decode(v.str())) {
        std::string s;
        utf8_append(s, c);
        out.emplace_back(std::move(s));
      }
      return out;
    }
    default:
      throw Error(str_cat("'", v.type_name(), "' object is not iterable"));
  }
}

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    bool fl = a.is_float() || b.is_float();
    if (op == "/") {
      IRIS_CHECK(b.to_double() != 0.0, "division by zero");
      return Value(a.to_double() / b.to_double());
    }
    if (!fl) {
      int64_t x = int_of(a), y = int_of(b);
      if (op == "+") return checked_int([&](int64_t& r) { return __builtin_add_overflow(x, y, &r); }, "+");
      if (op == "-") return checked_int([&](int64_t& r) { return __builtin_sub_overflow(x, y, &r); }, "-");
      if (op == "*") return checked_int([&](int64_t& r) { return __builtin_mul_overflow(x, y, &r); }, "*");
      if (op == "//" || op == "%") {
        IRIS_CHECK(y != 0, "integer division or modulo by zero");
        IRIS_CHECK(!(x == INT64_MIN && y == -1), "integer overflow in '", op, "'");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward negative infinity
          --q;
          m += y;
        }
        return Value(op == "//" ? q : m);
      }
      if (op == "**") {
        if (y < 0) return Value(std::pow(double(x), double(y)));
        int64_t result = 1, base = x;
        bool overflow = false;
        for (int64_t e = y; e > 0; e >>= 1) {
          if (e & 1) overflow |= __builtin_mul_overflow(result, base, &result);
          if (e > 1) overflow |= __builtin_mul_overflow(base, base, &base);
        }
        IRIS_CHECK(!overflow, "integer overflow in '**'");
        return Value(result);
      }
    } else {
      double x = a.to_double(), y = b.to_double();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (op == "//" || op == "%") {
        IRIS_CHECK(y != 0.0, "float division or modulo by zero");
        double m = std::fmod(x, y);
        if (m != 0.0 && ((m < 0) != (y < 0))) m += y;
        if (op == "%") return Value(m == 0.0 ? std::copysign(0.0, y) : m);
        // CPython's float floor division: exact quotient of (x - fmod) / y, rounded to the nearest integer.
        double mod = std::fmod(x, y), div = (x - mod) / y;
        if (mod != 0.0 && ((y < 0) != (mod < 0))) div -= 1.0;
        if (div == 0.0) return Value(std::copysign(0.0, x / y));
        double fl = std::floor(div);
        if (div - fl > 0.5) fl += 1.0;
        return Value(fl);
      }
      if (op == "**") return Value(std::pow(x, y));
    }
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
    if (a.is_list() && b.is_list()) {
      std::vector<Value> out = a.list_ref().items;
      out.insert(out.end(), b.list_ref().items.begin(), b.list_ref().items.end());
      return Value::list(std::move(out), a.list_ref().tuple && b.list_ref().tuple);
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) return repeat(a, int_of(b));
    if ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool())) return repeat(b, int_of(a));
  }
  if (op == "%" && a.is_string()) {
    std::vector<Value> args = b.is_list() && b.list_ref().tuple ? b.list_ref().items : std::vector<Value>{b};
    return Value(percent_format(a.str(), args));
  }
  operand_error(op, a, b);
}

std::vector<std::pair<std::string, Value>> make_globals() {
  std::vector<std::pair<std::string, Value>> g;
  g.emplace_back("range", Value::function("range", [](CallArgs& raw) {
                   IRIS_CHECK(raw.kw.empty() && !raw.pos.empty() && raw.pos.size() <= 3,
                              "range() takes 1 to 3 positional arguments");
                   int64_t start = 0, stop = 0, step = 1;
                   if (raw.pos.size() == 1) {
                     stop = as_index_int(raw.pos[0], "range");
                   } else {
                     start = as_index_int(raw.pos[0], "range");
                     stop = as_index_int(raw.pos[1], "range");
                     if (raw.pos.size() == 3) step = as_index_int(raw.pos[2], "range");
                   }
                   IRIS_CHECK(step != 0, "range() arg 3 must not be zero");
                   std::vector<Value> out;
                   for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                     IRIS_CHECK(int64_t(out.size()) < kMaxRange, "range too big (more than ", kMaxRange,
                                " items)");
                     out.emplace_back(i);
                   }
                   return Value::list(std::move(out));
                 }));
  auto dict_like = [](DictKind kind, const char* name) {
    return Value::function(name, [kind, name](CallArgs& raw) {
      Value d = Value::dict(kind);
      IRIS_CHECK(raw.pos.size() <= 1, name, "() takes at most one positional argument");
      if (!raw.pos.empty()) {
        const Value& src = raw.pos[0];
        IRIS_CHECK(src.is_plain_dict() || src.is_dict(), name, "(): positional argument must be a mapping");
        for (const auto& kv : src.dict_ref().items) d.dict_ref().set(kv.first, kv.second);
      }
      for (auto& kv : raw.kw) d.dict_ref().set(kv.first, kv.second);
      return d;
    });
  };
  g.emplace_back("namespace", dict_like(DictKind::Namespace, "namespace"));
  g.emplace_back("dict", dict_like(DictKind::Plain, "dict"));
  g.emplace_back("raise_exception", Value::function("raise_exception", [](CallArgs& raw) -> Value {
                   IRIS_CHECK(raw.pos.size() == 1 && raw.kw.empty(),
                              "raise_exception() takes exactly one argument");
                   throw TemplateRaised(to_str(raw.pos[0]));
                 }));
  g.emplace_back("strftime_now", Value::function("strftime_now", [](CallArgs& raw) {
                   IRIS_CHECK(raw.pos.size() == 1 && raw.kw.empty() && raw.pos[0].is_string(),
                              "strftime_now() takes one format string");
                   std::time_t now = std::time(nullptr);
                   std::tm tm{};
                   localtime_r(&now, &tm);
                   char buf[512];
                   size_t n = std::strftime(buf, sizeof(buf), raw.pos[0].str().c_str(), &tm);
                   return Value(std::string(buf, n));
                 }));
  return g;
}

}  // namespace iris::text::jinja
