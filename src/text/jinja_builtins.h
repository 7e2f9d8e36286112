// Jinja builtins used by the interpreter (internal to src/text/jinja*): filters, tests, attribute and item
// access (with Python's str/list/dict methods as bound callables), slicing, iteration and the global
// functions that transformers' chat-template environment provides (range, namespace, dict, raise_exception,
// strftime_now).
#pragma once
#include <string>
#include <vector>

#include "text/jinja_value.h"

namespace iris::text::jinja {

Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
bool apply_test(const std::string& name, const Value& input, CallArgs& args);

// obj.name: dict keys, namespace/loop attributes and bound methods of str/list/dict. Missing: undefined;
// anything on an undefined value is that undefined again (lenient, like Jinja's ChainableUndefined).
Value get_attr(const Value& obj, const std::string& name);
// obj[key]: indices (negative from the end), dict keys; falls back to get_attr for string keys, as Jinja
// does.
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step] on lists and strings; null pointers are omitted parts.
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);

// The items a for loop visits: list items, dict keys, string characters; undefined: none. Throws for other
// types.
std::vector<Value> iterate(const Value& v);

// Python binary operators (+ - * / // % **) with Python's numeric rules; throws iris::Error on type errors.
Value binary_op(const std::string& op, const Value& a, const Value& b);

// The global functions and values every template sees.
std::vector<std::pair<std::string, Value>> make_globals();

}  // namespace iris::text::jinja
