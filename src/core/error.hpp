// Errors: library code throws bmojo::Error with a message that names what was wrong and where;
// the CLI turns it into one line and a non-zero exit code.
#pragma once
#include <stdexcept>
#include <string>

namespace bmojo {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& message) {
  throw Error(message);
}

inline void check(bool condition, const std::string& message) {
  if (!condition) fail(message);
}

// A literal message is turned into a string only on failure (hot paths call check() every step; a message
// built from pieces is still built every time: write `if (!ok) fail(...)` there).
inline void check(bool condition, const char* message) {
  if (!condition) fail(message);
}

}  // namespace bmojo
