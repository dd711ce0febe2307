// Model FLOPs for throughput figures: multiply-adds count 2, training = forward + backward = 3 x forward.
#pragma once
#include "model/config.hpp"

namespace bmojo {

// Forward FLOPs per token at sequence length T, the LM head applied to a share head_fraction of positions.
double forward_flops_per_token(const ModelConfig& cfg, int T, double head_fraction);
inline double training_flops_per_token(const ModelConfig& cfg, int T, double head_fraction) {
  return 3.0 * forward_flops_per_token(cfg, T, head_fraction);
}

}  // namespace bmojo
