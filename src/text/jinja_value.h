// Values of the Jinja interpreter (internal to src/text/jinja*): the JSON-like types Python's Jinja sees in
// chat templates (undefined, none, bool, int, float, str, list/tuple, dict) plus callables (macros, builtins,
// bound methods) and the dict-like namespace and loop objects. Lists and dicts are shared by reference, as in
// Python, so `ns.items.append(x)` is seen through every name bound to the list. Also: Python's str()/repr(),
// json.dumps as transformers' tojson calls it, and the UTF-8 helpers (lengths and indices count code points).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace iris::text::jinja {

class Value;

struct List {
  std::vector<Value> items;
  bool tuple = false;  // only changes repr: (a, b)
};

enum class DictKind : uint8_t { Plain, Namespace, Loop };

// Insertion-ordered string-keyed dict (Python dicts keep insertion order; tojson must too).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  DictKind kind = DictKind::Plain;
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(const std::string& key, Value v);
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

struct Callable {
  std::string name;
  std::function<Value(CallArgs&)> fn;
};

struct Undefined {
  std::string hint;  // what was looked up, for error messages ("'foo' is undefined")
};

using ListPtr = std::shared_ptr<List>;
using DictPtr = std::shared_ptr<Dict>;
using CallablePtr = std::shared_ptr<Callable>;

class Value {
 public:
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Callable };

  Value() : v_(Undefined{}) {}
  static Value undefined(std::string hint = {}) { return Value(Storage(Undefined{std::move(hint)})); }
  static Value none() { return Value(Storage(nullptr)); }
  Value(bool b) : v_(b) {}
  Value(int v) : v_(int64_t(v)) {}
  Value(int64_t v) : v_(v) {}
  Value(double v) : v_(v) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(ListPtr l) : v_(std::move(l)) {}
  Value(DictPtr d) : v_(std::move(d)) {}
  Value(CallablePtr c) : v_(std::move(c)) {}
  static Value list(std::vector<Value> items = {}, bool tuple = false);
  static Value dict(DictKind kind = DictKind::Plain);
  static Value function(std::string name, std::function<Value(CallArgs&)> fn);

  Kind kind() const { return Kind(v_.index()); }
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_bool() const { return kind() == Kind::Bool; }
  bool is_int() const { return kind() == Kind::Int; }
  bool is_float() const { return kind() == Kind::Float; }
  bool is_number() const { return is_bool() || is_int() || is_float(); }  // Python: bool is an int
  bool is_string() const { return kind() == Kind::String; }
  bool is_list() const { return kind() == Kind::List; }
  bool is_dict() const { return kind() == Kind::Dict; }
  bool is_plain_dict() const { return is_dict() && dict_ref().kind == DictKind::Plain; }
  bool is_callable() const { return kind() == Kind::Callable; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  const std::string& str() const { return std::get<std::string>(v_); }
  const ListPtr& list_ptr() const { return std::get<ListPtr>(v_); }
  const DictPtr& dict_ptr() const { return std::get<DictPtr>(v_); }
  const CallablePtr& callable() const { return std::get<CallablePtr>(v_); }
  List& list_ref() const { return *list_ptr(); }
  Dict& dict_ref() const { return *dict_ptr(); }
  const std::string& undefined_hint() const { return std::get<Undefined>(v_).hint; }

  // Numeric value of a bool/int/float (callers check is_number first).
  double to_double() const;
  // Python truthiness.
  bool truthy() const;
  // Python type name for error messages ('str', 'int', 'list', ...).
  std::string type_name() const;

 private:
  using Storage = std::variant<Undefined, std::nullptr_t, bool, int64_t, double, std::string, ListPtr,
                               DictPtr, CallablePtr>;
  explicit Value(Storage v) : v_(std::move(v)) {}
  Storage v_;
};

// While one is alive on a thread, every list and dict created on that thread is recorded (weakly); its
// destructor empties the ones still alive. Lists and dicts are reference-counted and a template can make them
// reference each other (l.append(l), ns.self = ns), so a render ends by breaking whatever cycles it built.
class CycleCollector {
 public:
  CycleCollector();
  ~CycleCollector();
  CycleCollector(const CycleCollector&) = delete;
  CycleCollector& operator=(const CycleCollector&) = delete;
  void track(const ListPtr& l);
  void track(const DictPtr& d);

 private:
  void compact();
  CycleCollector* outer_;
  std::vector<std::weak_ptr<List>> lists_;
  std::vector<std::weak_ptr<Dict>> dicts_;
  size_t next_compact_ = 4096;
};

// Conversions from and to JSON. from_json copies, so templates never modify the caller's data.
Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

// Python semantics.
std::string to_str(const Value& v);  // str(v); undefined -> ""
std::string repr(const Value& v);    // repr(v)
std::string float_repr(double d);    // repr(float): shortest round-trip, '1.0', '1e-05', 'inf'
bool equals(const Value& a, const Value& b);
int compare(const Value& a, const Value& b);  // <0, 0, >0; throws iris::Error for unorderable types
bool contains(const Value& container, const Value& item);  // `item in container`

// json.dumps(v, ensure_ascii, indent, separators, sort_keys) with Python's defaults; indent < 0 means None.
struct JsonOptions {
  int indent = -1;
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_sep;  // empty: Python's default (", " without indent, "," with)
  std::string key_sep = ": ";
};
std::string to_json(const Value& v, const JsonOptions& opt);

// UTF-8 helpers. Invalid bytes count as one code point each, so nothing is ever dropped.
std::vector<char32_t> utf8_decode(std::string_view s);
std::string utf8_encode(const std::u32string& cps);
void utf8_append(std::string& out, char32_t cp);
int64_t utf8_length(std::string_view s);
bool py_isspace(char32_t c);  // str.isspace(): the Unicode whitespace Python's strip()/split() use
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);

}  // namespace iris::text::jinja
