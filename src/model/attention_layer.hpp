// The attention mixer (letter A): fused QKV projection, RoPE on q and k, causal (windowed) attention,
// output projection added into the residual stream.
#pragma once
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/rope.hpp"
#include "model/config.hpp"
#include "model/weights.hpp"

namespace bmojo {

struct AttentionActivations {
  std::vector<float> qkv;     // (B, T, (H + 2Hk) Dh), q and k rotated
  std::vector<float> output;  // (B, T, H Dh) attention output before Wo
  std::vector<float> lse;     // (B, H, T)
};

struct AttentionScratch {
  std::vector<float> dqkv, doutput;
};

// residual (B, T, D) += Attention(xn (B, T, D)).
void attention_layer_forward(float* residual, AttentionActivations& act, const float* xn,
                             const AttentionWeights& w, const ModelConfig& cfg, const RopeTable& rope, int B,
                             int T, bool reference);
// dxn (B, T, D) = gradient w.r.t. xn; weight gradients accumulate into dw.
void attention_layer_backward(float* dxn, const AttentionWeights& dw, AttentionScratch& scratch,
                              const float* dresidual, const AttentionActivations& act, const float* xn,
                              const AttentionWeights& w, const ModelConfig& cfg, const RopeTable& rope, int B,
                              int T, bool reference);

}  // namespace bmojo
