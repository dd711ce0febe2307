// Shared by the libFuzzer harnesses: each input is written to a scratch file and handed to the parser the
// way a user's file would be. A bmojo::Error is the expected answer to a bad file; anything else (a signal,
// a sanitizer report, another exception, a leak) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "model/config.hpp"

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

// The small model fuzz_state loads states into, with every layer kind; make_seeds.cpp writes its seeds.
inline ModelConfig state_model_config() {
  ModelConfig c;
  c.vocab_size = 40;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.layers = "ABFM";
  c.window = 3;
  c.eidetic_per_chunk = 1;
  c.eidetic_capacity = 2;
  c.d_ff = 8;
  return c;
}

}  // namespace bmojo::fuzz
