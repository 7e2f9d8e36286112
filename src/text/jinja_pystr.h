// Python string semantics for the Jinja interpreter (internal to src/text/jinja*):
// str.strip/split/replace/title/ capitalize with Python's Unicode whitespace and casing, Jinja's title
// filter, HTML escaping, and the two string formatting styles templates use ('%s' % x and '{}'.format(x)).
#pragma once
#include <string>
#include <vector>

#include "tensor/error.h"
#include "text/jinja_value.h"

namespace iris::text::jinja {

inline const std::string& need_str(const Value& v, const char* what) {
  IRIS_CHECK(v.is_string(), what, ": expected a string, got ", v.type_name());
  return v.str();
}

// chars_arg: null, none or undefined strip Python whitespace; a string strips any of its characters.
std::string py_strip(const std::string& s, const Value* chars_arg, bool left, bool right);
// sep: null, none or undefined split on whitespace runs; maxsplit < 0: no limit.
std::vector<std::string> py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right);
std::string py_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count);
std::string py_title(const std::string& s);       // str.title()
std::string py_capitalize(const std::string& s);  // str.capitalize()
std::string jinja_title(
    const std::string& s);  // the title filter: words start after whitespace, '-' or brackets
bool all_cased(const std::string& s, bool upper);  // str.isupper() / str.islower()
bool is_alnum(char32_t c);                         // str.isalnum() for one code point
std::string html_escape(const std::string& s);
std::string percent_format(const std::string& fmt, const std::vector<Value>& args);  // fmt % args
std::string brace_format(const std::string& fmt, CallArgs& args);  // fmt.format(*args, **kw)

}  // namespace iris::text::jinja
