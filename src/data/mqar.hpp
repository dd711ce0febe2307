// Multi-query associative recall (SPEC section 8, as Zoology defines it), and uniform random tokens for
// throughput benchmarks. Batches are a pure function of (seed, split, batch index), so a resumed run
// sees exactly the batches an uninterrupted one would.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.hpp"

namespace bmojo {

struct Batch {
  int B = 0, T = 0;
  std::vector<int32_t> inputs;   // (B, T)
  std::vector<int32_t> targets;  // (B, T), -100 where unlabelled
};

enum class Split : uint64_t { kTrain = 0, kEval = 1 };

// One MQAR example of length L + G into inputs/targets (both of that length).
void mqar_example(int32_t* inputs, int32_t* targets, const DataConfig& d, int vocab_size, uint64_t seed);

Batch make_batch(const DataConfig& d, int vocab_size, int batch_size, uint64_t seed, Split split,
                 uint64_t index);

}  // namespace bmojo
