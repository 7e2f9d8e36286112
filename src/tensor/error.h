// Errors: iris::Error is thrown at API, loader and parser boundaries with a message naming the thing, the value
// and what was expected. Frontends catch it once and turn it into an exit code or an HTTP status.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace iris {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates anything printable with operator<< into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "iris: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace iris

// Checks user-reachable conditions: throws iris::Error with the concatenated message.
#define IRIS_CHECK(cond, ...)                                   \
  do {                                                          \
    if (!(cond)) throw ::iris::Error(::iris::str_cat(__VA_ARGS__)); \
  } while (0)

// Checks internal invariants (inside kernels): aborts; these are programming errors, not bad input.
#define IRIS_ASSERT(cond) \
  do {                    \
    if (!(cond)) ::iris::assert_fail(#cond, __FILE__, __LINE__); \
  } while (0)
