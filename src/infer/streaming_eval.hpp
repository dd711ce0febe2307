// Evaluation through streaming inference (SPEC sections 5-6): every held-out sequence of the task is fed
// token by token block (a fresh session per sequence), optionally with a long-term memory store per
// sequence, and scored at its labelled positions. Without a store it reproduces the parallel evaluation;
// with one it measures what retrieval from storage adds on sequences longer than the memory can hold.
#pragma once
#include <string>

#include "data/batches.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "train/trainer.hpp"

namespace bmojo {

struct StreamingEvalOptions {
  int batches = 8;
  int64_t block = 256;    // prefill block size
  std::string store_dir;  // empty: no store; else one fresh store per sequence under this directory
  int retrieve = 8;       // entries read per KV head at each chunk boundary
};

EvalResult evaluate_streaming(const Model& model, const Config& config, const StreamingEvalOptions& options);
// The same on the evaluation batches of an open data source.
EvalResult evaluate_streaming(const Model& model, const Config& config, const BatchSource& data,
                              const StreamingEvalOptions& options);

}  // namespace bmojo
