// Syntax tree of a parsed Jinja template (internal to src/text/jinja*), and the parser's entry point. The
// node shapes follow Jinja's own parser (jinja2/parser.py), so operator precedence and scoping match Python's
// Jinja.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace iris::text::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class ExprKind {
  Literal,   // literal
  Name,      // name
  List,      // items
  Tuple,     // items
  Dict,      // items: key0, value0, key1, value1, ...
  GetAttr,   // a.name
  GetItem,   // a[b]
  Slice,     // a[items[0]:items[1]:items[2]], null items for omitted parts
  Call,      // a(items..., kwargs...)
  Filter,    // a | name(items..., kwargs...); a is null inside {% filter %} / {% set x | f %}
  Test,      // a is [not] name(items...)
  Not,       // not a
  Neg,       // -a
  Pos,       // +a
  Binary,    // a name b: + - * / // % **
  Concat,    // items joined with ~
  Compare,   // a ops[0] items[0] ops[1] items[1] ... (chained like Python)
  And,       // a and b
  Or,        // a or b
  CondExpr,  // a if b else c (c may be null: undefined)
};

struct Expr {
  ExprKind kind = ExprKind::Literal;
  int line = 0, col = 0;
  Value literal;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;  // Test: `is not`
};

enum class StmtKind {
  Text,      // text
  Output,    // {{ expr }}
  If,        // branches: (cond, body)..., (null, else body)
  For,       // for targets in expr [if cond] body [else else_body]
  Set,       // set targets = expr
  SetAttr,   // set targets[0].attr = expr (namespace)
  SetBlock,  // set targets[0] [| filters] body endset
  Macro,     // macro targets[0](params) body
  Break,
  Continue,
  Generation,   // {% generation %} body: transformers' assistant-mask extension, renders its body
  FilterBlock,  // filter filters body endfilter
  Do,           // do expr
};

struct Stmt {
  StmtKind kind = StmtKind::Text;
  int line = 0, col = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters with optional defaults
  std::vector<ExprPtr> filters;                         // Filter exprs with a == null, applied in order
};

struct Template {
  Body body;
};

// Parses with transformers' settings: trim_blocks and lstrip_blocks on, keep_trailing_newline off. Throws
// iris::Error "chat template syntax error at line L, column C: ..." on bad input, including unknown
// filters/tests.
std::unique_ptr<Template> parse_template(const std::string& source);

// Names the parser accepts (the interpreter implements exactly these).
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

}  // namespace iris::text::jinja
