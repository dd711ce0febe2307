// `bmojo infer-bench`: llama-bench-style inference speed. For each context length N: prefill N tokens in
// blocks, then decode tokens one at a time at that context; repeated to give mean and spread; reports the
// resident state bytes after the prefill.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.hpp"
#include "model/layer_state.hpp"

namespace bmojo {

struct InferBenchOptions {
  std::string config_path;             // empty: the built-in demo config
  std::string checkpoint;              // or a trained model
  std::vector<std::string> overrides;  // section.key=value
  std::vector<int64_t> contexts = {1024, 4096, 16384, 65536};
  int64_t decode_tokens = 128;
  int repeats = 3;
  int64_t prefill_block = 512;
  int threads = 0;
  bool json = false;
  std::string kv_storage = "f32";  // the states' attention keys and values: f32 or bf16
  // Batched decode: for each context, this many sequences decoded together (empty: one Session, as above).
  std::vector<int64_t> concurrent;
  bool bandwidth = false;  // also measure the memory read bandwidth and decode's share of it
  bool profile = false;    // with concurrent: where a decode step's time goes, by kernel
  Config fallback;         // used when neither config_path nor checkpoint is given
};

int run_infer_bench(const InferBenchOptions& o);

}  // namespace bmojo
