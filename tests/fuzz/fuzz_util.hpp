// Shared by the libFuzzer harnesses: each input is written to a scratch file and handed to the parser the
// way a user's file would be. A bmojo::Error is the expected answer to a bad file; anything else (a signal,
// a sanitizer report, another exception, a leak) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace bmojo::fuzz {

inline std::string scratch_path(const char* name) {
  return "/tmp/bmojo_fuzz_" + std::to_string(::getpid()) + "_" + name;
}

inline void write_input(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
}

}  // namespace bmojo::fuzz
