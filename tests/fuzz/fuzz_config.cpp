// Config JSON as read from a file and as a --set value.
#include <string>

#include "core/error.hpp"
#include "fuzz_util.hpp"
#include "model/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = bmojo::fuzz::scratch_path("config.json");
  bmojo::fuzz::write_input(path, data, size);
  try {
    bmojo::Config c = bmojo::load_config_file(path);
    c.validate();
  } catch (const bmojo::Error&) {
  }
  try {
    bmojo::Config c;
    bmojo::apply_override(c, "model.layers=" + std::string(reinterpret_cast<const char*>(data), size));
  } catch (const bmojo::Error&) {
  }
  return 0;
}
