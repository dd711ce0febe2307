// `bmojo generate`: run a trained model on a prompt with streaming inference (src/infer/session.hpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "infer/sampler.hpp"

namespace bmojo {

struct GenerateOptions {
  std::string checkpoint;
  std::string prompt;       // --prompt
  std::string prompt_file;  // --prompt-file ("-" = stdin); stdin is read when neither is given
  bool ids = false;         // prompt and output are token ids instead of byte-tokenized text
  int64_t max_tokens = 64;
  SamplingOptions sampling;
  std::vector<std::string> stop;  // stop strings (text mode)
  std::vector<int32_t> stop_ids;  // stop tokens
  int64_t prefill_block = 256;
  std::string load_state, save_state;
  std::string store_dir;           // long-term memory store (B layers); empty: none
  std::string kv_storage = "f32";  // how the state keeps its attention keys and values (f32 or bf16)
  int retrieve = 8;
  bool store_sync = false;
  int threads = 0;
  bool json = false;
};

int run_generate(const GenerateOptions& o);

}  // namespace bmojo
