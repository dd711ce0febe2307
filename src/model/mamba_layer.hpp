// The Mamba mixer (letter M, SPEC section 2): in-projection to [x | z], causal depthwise conv + SiLU,
// x-projection to [dt | B | C], softplus dt, selective scan, SiLU(z) gate, out-projection added into the
// residual stream.
#pragma once
#include <cmath>
#include <vector>

#include "model/config.hpp"
#include "model/weights.hpp"

namespace bmojo {

struct MambaActivations {
  std::vector<float> xz;      // (B, T, 2 d_inner) in-projection
  std::vector<float> conv;    // (B, T, d_inner) conv output before SiLU
  std::vector<float> x;       // (B, T, d_inner) SiLU(conv): the scan input
  std::vector<float> dbc;     // (B, T, R + 2N)
  std::vector<float> dt_raw;  // (B, T, d_inner) before softplus
  std::vector<float> dt;      // (B, T, d_inner)
  std::vector<float> A;       // (d_inner, N) = -exp(A_log)
  std::vector<float> y;       // (B, T, d_inner) scan output
  std::vector<float> gated;   // (B, T, d_inner) y * silu(z)
};

struct MambaScratch {
  std::vector<float> dgated, dxz, dx, ddt, ddbc, dA;
};

inline float softplusf(float v) {
  return v > 20.0f ? v : std::log1p(std::exp(v));
}

// residual (B, T, D) += Mamba(xn (B, T, D)).
void mamba_layer_forward(float* residual, MambaActivations& act, const float* xn, const MambaWeights& w,
                         const ModelConfig& cfg, int B, int T, bool reference);
// dxn (B, T, D) = gradient w.r.t. xn (+= when accumulate_dxn); weight gradients accumulate into dw.
void mamba_layer_backward(float* dxn, const MambaWeights& dw, MambaScratch& scratch, const float* dresidual,
                          const MambaActivations& act, const float* xn, const MambaWeights& w,
                          const ModelConfig& cfg, int B, int T, bool reference, bool accumulate_dxn = false);

}  // namespace bmojo
