// Next-token sampling from logits: greedy (temperature 0), or temperature-scaled softmax restricted to the
// top-k tokens and then to the smallest set whose probability reaches top-p, drawn with a seeded RNG.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.hpp"

namespace bmojo {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax, ties to the smaller id)
  int top_k = 0;             // 0: no limit
  double top_p = 1.0;        // 1: no limit
  uint64_t seed = 0;
  void validate() const;  // throws bmojo::Error naming the bad option
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t sample(const float* logits, int vocab);

 private:
  SamplingOptions opt_;
  Rng rng_;
  std::vector<int32_t> order_;
  std::vector<double> probs_;
};

}  // namespace bmojo
