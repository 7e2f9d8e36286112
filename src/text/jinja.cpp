// Chat-template interpreter: walks the tree from jinja_parse.cpp with Jinja's scoping rules (a for-loop
// iteration, macro call, {% set %} block or {% generation %} body gets its own scope; `if` does not),
// Python's value semantics from jinja_value.cpp and the builtins of jinja_builtins.cpp. Also the public
// ChatTemplate class and the helpers that find a model's template.
#include "text/jinja.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "text/jinja_ast.h"
#include "text/jinja_builtins.h"

namespace iris::text {
namespace jinja {
namespace {

constexpr int kMaxCallDepth = 200;              // macro recursion
constexpr int64_t kMaxIterations = 20'000'000;  // total loop iterations per render
constexpr size_t kMaxOutput = size_t(1) << 28;  // 256 MiB of rendered text

struct Scope {
  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;

  explicit Scope(std::shared_ptr<Scope> p) : parent(std::move(p)) {}
  void set(const std::string& name, Value v) {
    for (auto& kv : vars)
      if (kv.first == name) {
        kv.second = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get())
      for (const auto& kv : s->vars)
        if (kv.first == name) return &kv.second;
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

ScopePtr child_of(const ScopePtr& parent) {
  return std::make_shared<Scope>(parent);
}

class Interpreter {
 public:
  explicit Interpreter(std::vector<std::pair<size_t, size_t>>* spans) : spans_(spans) {}

  std::string run(const Template& t, const Value& context) {
    auto globals = std::make_shared<Scope>(nullptr);
    for (auto& kv : make_globals()) globals->set(kv.first, std::move(kv.second));
    if (context.is_plain_dict())
      for (const auto& kv : context.dict_ref().items)
        globals->set(kv.first, kv.second);  // context shadows globals
    ScopePtr top = child_of(globals);
    std::string out;
    root_out_ = &out;
    try {
      exec_body(t.body, top, out);
    } catch (const TemplateRaised&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(str_cat("chat template error at line ", line_, ", column ", col_, ": ", e.what()));
    }
    return out;
  }

 private:
  enum class Flow { Normal, Break, Continue };

  void at(int line, int col) {
    line_ = line;
    col_ = col;
  }

  Flow exec_body(const Body& body, const ScopePtr& scope, std::string& out) {
    for (const auto& s : body) {
      Flow f = exec(*s, scope, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  void append(std::string& out, const std::string& text) {
    IRIS_CHECK(out.size() + text.size() <= kMaxOutput, "rendered text exceeds ", kMaxOutput, " bytes");
    out += text;
  }

  void assign(const std::vector<std::string>& targets, const Value& v, Scope& scope) {
    if (targets.size() == 1) {
      scope.set(targets[0], v);
      return;
    }
    IRIS_CHECK(v.is_list(), "cannot unpack a '", v.type_name(), "' into ", targets.size(), " variables");
    const auto& items = v.list_ref().items;
    IRIS_CHECK(items.size() == targets.size(), (items.size() > targets.size() ? "too many" : "not enough"),
               " values to unpack (expected ", targets.size(), ", got ", items.size(), ")");
    for (size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], items[i]);
  }

  Value apply_filters(const std::vector<ExprPtr>& filters, Value v, const ScopePtr& scope) {
    for (const auto& f : filters) {
      CallArgs args = eval_args(*f, scope);
      at(f->line, f->col);
      v = apply_filter(f->name, v, args);
    }
    return v;
  }

  Flow exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
    at(s.line, s.col);
    switch (s.kind) {
      case StmtKind::Text:
        append(out, s.text);
        return Flow::Normal;
      case StmtKind::Output:
        append(out, to_str(eval(*s.expr, scope)));
        return Flow::Normal;
      case StmtKind::If:
        for (const auto& br : s.branches)
          if (!br.first || eval(*br.first, scope).truthy()) return exec_body(br.second, scope, out);
        return Flow::Normal;
      case StmtKind::For:
        return exec_for(s, scope, out);
      case StmtKind::Set:
        assign(s.targets, eval(*s.expr, scope), *scope);
        return Flow::Normal;
      case StmtKind::SetAttr: {
        Value v = eval(*s.expr, scope);
        const Value* target = scope->find(s.targets[0]);
        at(s.line, s.col);
        IRIS_CHECK(target && target->is_dict() && target->dict_ref().kind == DictKind::Namespace,
                   "cannot assign attribute '", s.attr, "' on '", s.targets[0],
                   "': it is not a namespace() object");
        target->dict_ref().set(s.attr, std::move(v));
        return Flow::Normal;
      }
      case StmtKind::SetBlock: {
        std::string buf;
        exec_body(s.body, child_of(scope), buf);
        scope->set(s.targets[0], apply_filters(s.filters, Value(std::move(buf)), scope));
        return Flow::Normal;
      }
      case StmtKind::FilterBlock: {
        std::string buf;
        exec_body(s.body, child_of(scope), buf);
        append(out, to_str(apply_filters(s.filters, Value(std::move(buf)), scope)));
        return Flow::Normal;
      }
      case StmtKind::Macro:
        define_macro(s, scope);
        return Flow::Normal;
      case StmtKind::Generation: {
        size_t begin = out.size();
        exec_body(s.body, child_of(scope), out);
        if (spans_ && &out == root_out_ && out.size() > begin) spans_->emplace_back(begin, out.size());
        return Flow::Normal;
      }
      case StmtKind::Do:
        eval(*s.expr, scope);
        return Flow::Normal;
      case StmtKind::Break:
        return Flow::Break;
      case StmtKind::Continue:
        return Flow::Continue;
    }
    return Flow::Normal;
  }

  Flow exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
    Value iterable = eval(*s.expr, scope);
    at(s.line, s.col);
    std::vector<Value> items = iterate(iterable);
    if (s.cond) {  // `for x in xs if cond`: filter first, so loop.length and loop.last see the kept items
      std::vector<Value> kept;
      for (auto& item : items) {
        ScopePtr probe = child_of(scope);
        assign(s.targets, item, *probe);
        if (eval(*s.cond, probe).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      exec_body(s.else_body, child_of(scope), out);
      return Flow::Normal;
    }
    const int64_t n = int64_t(items.size());
    for (int64_t i = 0; i < n; ++i) {
      IRIS_CHECK(++iterations_ <= kMaxIterations, "more than ", kMaxIterations, " loop iterations");
      ScopePtr it = child_of(scope);
      assign(s.targets, items[size_t(i)], *it);
      it->set("loop", loop_object(items, i));
      Flow f = exec_body(s.body, it, out);
      if (f == Flow::Break) break;
    }
    return Flow::Normal;
  }

  static Value loop_object(const std::vector<Value>& items, int64_t i) {
    const int64_t n = int64_t(items.size());
    Value loop = Value::dict(DictKind::Loop);
    Dict& d = loop.dict_ref();
    d.items.reserve(12);
    d.items.emplace_back("index", Value(i + 1));
    d.items.emplace_back("index0", Value(i));
    d.items.emplace_back("revindex", Value(n - i));
    d.items.emplace_back("revindex0", Value(n - i - 1));
    d.items.emplace_back("first", Value(i == 0));
    d.items.emplace_back("last", Value(i == n - 1));
    d.items.emplace_back("length", Value(n));
    d.items.emplace_back("depth", Value(int64_t(1)));
    d.items.emplace_back("depth0", Value(int64_t(0)));
    if (i > 0) d.items.emplace_back("previtem", items[size_t(i - 1)]);
    if (i + 1 < n) d.items.emplace_back("nextitem", items[size_t(i + 1)]);
    d.items.emplace_back("cycle", Value::function("loop.cycle", [i](CallArgs& a) {
                           IRIS_CHECK(!a.pos.empty(), "loop.cycle() needs at least one argument");
                           return a.pos[size_t(i) % a.pos.size()];
                         }));
    return loop;
  }

  void define_macro(const Stmt& s, const ScopePtr& scope) {
    // The macro holds its defining scope weakly: the scope holds the macro, so a strong reference would leak.
    std::weak_ptr<Scope> def_scope = scope;
    const Stmt* macro = &s;
    scope->set(s.targets[0], Value::function(s.targets[0], [this, macro, def_scope](CallArgs& args) {
                 ScopePtr parent = def_scope.lock();
                 IRIS_CHECK(parent, "macro '", macro->targets[0],
                            "' called after the scope that defined it ended");
                 return call_macro(*macro, parent, args);
               }));
  }

  Value call_macro(const Stmt& m, const ScopePtr& def_scope, CallArgs& args) {
    IRIS_CHECK(depth_ < kMaxCallDepth, "macro calls nested more than ", kMaxCallDepth, " deep");
    struct DepthGuard {
      int& d;
      explicit DepthGuard(int& x) : d(x) { ++d; }
      ~DepthGuard() { --d; }
    } guard(depth_);
    int line = line_, col = col_;
    ScopePtr scope = child_of(def_scope);
    std::vector<Value> varargs;
    Value kwargs = Value::dict();
    std::vector<bool> bound(m.params.size(), false);
    for (size_t i = 0; i < args.pos.size(); ++i) {
      if (i < m.params.size()) {
        scope->set(m.params[i].first, args.pos[i]);
        bound[i] = true;
      } else {
        varargs.push_back(args.pos[i]);
      }
    }
    for (auto& kv : args.kw) {
      size_t k = 0;
      while (k < m.params.size() && m.params[k].first != kv.first) ++k;
      if (k < m.params.size()) {
        IRIS_CHECK(!bound[k], "macro '", m.targets[0], "' got multiple values for argument '", kv.first, "'");
        scope->set(kv.first, kv.second);
        bound[k] = true;
      } else {
        kwargs.dict_ref().set(kv.first, kv.second);
      }
    }
    for (size_t k = 0; k < m.params.size(); ++k) {
      if (bound[k]) continue;
      scope->set(m.params[k].first,
                 m.params[k].second
                     ? eval(*m.params[k].second, scope)
                     : Value::undefined("macro parameter '" + m.params[k].first + "' was not given"));
    }
    scope->set("varargs", Value::list(std::move(varargs)));
    scope->set("kwargs", kwargs);
    std::string buf;
    exec_body(m.body, scope, buf);
    at(line, col);
    return Value(std::move(buf));
  }

  CallArgs eval_args(const Expr& e, const ScopePtr& scope) {
    CallArgs args;
    args.pos.reserve(e.items.size());
    for (const auto& a : e.items) args.pos.push_back(eval(*a, scope));
    for (const auto& kv : e.kwargs) args.kw.emplace_back(kv.first, eval(*kv.second, scope));
    return args;
  }

  bool compare_op(const std::string& op, const Value& l, const Value& r) {
    if (op == "==") return equals(l, r);
    if (op == "!=") return !equals(l, r);
    if (op == "in") return contains(r, l);
    if (op == "not in") return !contains(r, l);
    int c = compare(l, r);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;  // ">="
  }

  Value eval(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case ExprKind::Literal:
        return e.literal;
      case ExprKind::Name: {
        if (const Value* v = scope->find(e.name)) return *v;
        return Value::undefined("'" + e.name + "' is undefined");
      }
      case ExprKind::List:
      case ExprKind::Tuple: {
        std::vector<Value> items;
        items.reserve(e.items.size());
        for (const auto& x : e.items) items.push_back(eval(*x, scope));
        return Value::list(std::move(items), e.kind == ExprKind::Tuple);
      }
      case ExprKind::Dict: {
        Value d = Value::dict();
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          Value k = eval(*e.items[i], scope);
          at(e.items[i]->line, e.items[i]->col);
          IRIS_CHECK(k.is_string(), "dict literal keys must be strings, got ", k.type_name());
          d.dict_ref().set(k.str(), eval(*e.items[i + 1], scope));
        }
        return d;
      }
      case ExprKind::GetAttr: {
        Value obj = eval(*e.a, scope);
        at(e.line, e.col);
        return get_attr(obj, e.name);
      }
      case ExprKind::GetItem: {
        Value obj = eval(*e.a, scope);
        Value key = eval(*e.b, scope);
        at(e.line, e.col);
        return get_item(obj, key);
      }
      case ExprKind::Slice: {
        Value obj = eval(*e.a, scope);
        Value parts[3];
        const Value* ptrs[3] = {nullptr, nullptr, nullptr};
        for (int i = 0; i < 3; ++i)
          if (e.items[size_t(i)]) {
            parts[i] = eval(*e.items[size_t(i)], scope);
            ptrs[i] = &parts[i];
          }
        at(e.line, e.col);
        return get_slice(obj, ptrs[0], ptrs[1], ptrs[2]);
      }
      case ExprKind::Call: {
        Value callee = eval(*e.a, scope);
        CallArgs args = eval_args(e, scope);
        at(e.line, e.col);
        if (callee.is_callable()) return callee.callable()->fn(args);
        if (callee.is_undefined())
          throw Error(callee.undefined_hint().empty() ? std::string("call of an undefined value")
                                                      : callee.undefined_hint() + " (called as a function)");
        throw Error(str_cat("'", callee.type_name(), "' object is not callable"));
      }
      case ExprKind::Filter: {
        Value input = e.a ? eval(*e.a, scope) : Value();
        CallArgs args = eval_args(e, scope);
        at(e.line, e.col);
        return apply_filter(e.name, input, args);
      }
      case ExprKind::Test: {
        Value v = eval(*e.a, scope);
        CallArgs args = eval_args(e, scope);
        at(e.line, e.col);
        return Value(apply_test(e.name, v, args) != e.negated);
      }
      case ExprKind::Not:
        return Value(!eval(*e.a, scope).truthy());
      case ExprKind::Neg:
      case ExprKind::Pos: {
        Value v = eval(*e.a, scope);
        at(e.line, e.col);
        if (v.is_float()) return Value(e.kind == ExprKind::Neg ? -v.as_float() : v.as_float());
        if (v.is_int() || v.is_bool()) {
          int64_t x = v.is_bool() ? int64_t(v.as_bool()) : v.as_int();
          IRIS_CHECK(x != INT64_MIN || e.kind == ExprKind::Pos, "integer overflow in unary '-'");
          return Value(e.kind == ExprKind::Neg ? -x : x);
        }
        if (v.is_undefined() && !v.undefined_hint().empty()) throw Error(v.undefined_hint());
        throw Error(str_cat("bad operand type for unary ", e.kind == ExprKind::Neg ? "-" : "+", ": '",
                            v.type_name(), "'"));
      }
      case ExprKind::Binary: {
        Value l = eval(*e.a, scope);
        Value r = eval(*e.b, scope);
        at(e.line, e.col);
        return binary_op(e.name, l, r);
      }
      case ExprKind::Concat: {
        std::string s;
        for (const auto& x : e.items) s += to_str(eval(*x, scope));
        return Value(std::move(s));
      }
      case ExprKind::Compare: {
        Value left = eval(*e.a, scope);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.items[i], scope);
          at(e.line, e.col);
          if (!compare_op(e.ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::And: {
        Value l = eval(*e.a, scope);
        return l.truthy() ? eval(*e.b, scope) : l;
      }
      case ExprKind::Or: {
        Value l = eval(*e.a, scope);
        return l.truthy() ? l : eval(*e.b, scope);
      }
      case ExprKind::CondExpr:
        if (eval(*e.b, scope).truthy()) return eval(*e.a, scope);
        return e.c ? eval(*e.c, scope)
                   : Value::undefined("the condition of an inline if without else was false");
    }
    return Value();
  }

  std::vector<std::pair<size_t, size_t>>* spans_;
  const std::string* root_out_ = nullptr;
  int line_ = 0, col_ = 0;
  int depth_ = 0;
  int64_t iterations_ = 0;
};

}  // namespace
}  // namespace jinja

// ---- ChatTemplate ----

ChatTemplate::ChatTemplate(const std::string& source)
    : source_(source), tmpl_(jinja::parse_template(source)) {}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

namespace {

jinja::Value context_value(jinja::Value v) {
  IRIS_CHECK(v.is_plain_dict(), "chat template: the render context must be a JSON object, got ",
             v.type_name());
  return v;
}

}  // namespace

std::string ChatTemplate::render(const nlohmann::json& context) const {
  jinja::CycleCollector collector;  // declared first: runs after every value of this render is released
  jinja::Interpreter interp(nullptr);
  return interp.run(*tmpl_, context_value(jinja::from_json(context)));
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render(context, nullptr);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context,
                                 std::vector<std::pair<size_t, size_t>>* generation_spans) const {
  if (generation_spans) generation_spans->clear();
  jinja::CycleCollector collector;  // declared first: runs after every value of this render is released
  jinja::Interpreter interp(generation_spans);
  return interp.run(*tmpl_, context_value(jinja::from_json(context)));
}

std::string ChatTemplate::render_messages(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                          const std::string& bos_token, const std::string& eos_token,
                                          const nlohmann::ordered_json& extra) const {
  IRIS_CHECK(messages.is_array(), "chat template: messages must be a JSON array, got ", messages.type_name());
  IRIS_CHECK(extra.is_null() || extra.is_object(),
             "chat template: extra variables must be a JSON object, got ", extra.type_name());
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = messages;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_token;
  ctx["eos_token"] = eos_token;
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
  return render(ctx);
}

// ---- finding a model's template ----

std::string chat_template_from_config(const nlohmann::json& config, const std::string& name) {
  IRIS_CHECK(config.is_object() && config.contains("chat_template"),
             "no \"chat_template\" in the configuration");
  const auto& ct = config["chat_template"];
  if (ct.is_string()) return ct.get<std::string>();
  IRIS_CHECK(ct.is_array(), "\"chat_template\" must be a string or a list of {name, template}, got ",
             ct.type_name());
  std::string names;
  for (const auto& entry : ct) {
    IRIS_CHECK(entry.is_object() && entry.contains("name") && entry.contains("template") &&
                   entry["name"].is_string() && entry["template"].is_string(),
               "\"chat_template\" list entries must be {\"name\": string, \"template\": string}");
    if (entry["name"].get<std::string>() == name) return entry["template"].get<std::string>();
    names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
  }
  throw Error(str_cat("no chat template named '", name, "' (available: ", names, ")"));
}

namespace {

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  IRIS_CHECK(f, "cannot open ", path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  IRIS_CHECK(!f.bad(), "error reading ", path.string());
  return ss.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(path.string(), ": invalid JSON: ", e.what()));
  }
}

}  // namespace

std::string read_chat_template(const std::string& model_dir, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  if (fs::exists(dir / "chat_template.jinja")) return read_text_file(dir / "chat_template.jinja");
  for (const char* file : {"chat_template.json", "tokenizer_config.json"}) {
    fs::path p = dir / file;
    if (!fs::exists(p)) continue;
    nlohmann::json cfg = read_json_file(p);
    if (cfg.is_object() && cfg.contains("chat_template")) {
      try {
        return chat_template_from_config(cfg, name);
      } catch (const Error& e) {
        throw Error(str_cat(p.string(), ": ", e.what()));
      }
    }
  }
  return "";
}

}  // namespace iris::text
