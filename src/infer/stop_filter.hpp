// Stop strings for generated text: output that may be the start of a stop string is held back, so a stop
// string (and anything after it) is never shown. Used by `bmojo generate` and by the server.
#pragma once
#include <string>
#include <vector>

namespace bmojo {

class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops);
  // Adds text; returns what can be shown now. Sets stopped when a stop string completed (what came before
  // it is returned; the rest is dropped).
  std::string push(const std::string& text, bool& stopped);
  // What is still held back (at the end of generation).
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

}  // namespace bmojo
