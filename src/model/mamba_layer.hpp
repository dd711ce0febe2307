// The Mamba mixer (letter M, SPEC section 2): in-projection to [x | z], causal depthwise conv + SiLU,
// x-projection to [dt | B | C], softplus dt, selective scan, SiLU(z) gate, out-projection added into the
// residual stream.
#pragma once
#include <cmath>
#include <vector>

#include "kernels/vector_math.hpp"
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
  // A depends on the weights alone, and its d_inner * N exps cost a decode step more than the scan: kept
  // per A_log tensor (a decode step's scratch serves every layer) and recomputed only when A_log changed.
  struct Decay {
    const float* A_log = nullptr;
    std::vector<float> A_log_seen, A;
  };
  std::vector<Decay> decays;
  // A decode step's per-sequence conv and scan states, for the batched kernels.
  std::vector<float*> conv_states, ssm_states;
};

struct MambaScratch {
  std::vector<float> dgated, dxz, dx, ddt, ddbc, dA;
};

inline float softplusf(float v) {
  return fast_softplus(v);
}

// The recurrent state of the mixer for B sequences (SPEC section 5): the last d_conv - 1 conv inputs and
// the scan state. Zeros before the first token.
struct MambaState {
  std::vector<float> conv;  // (B, d_conv - 1, d_inner)
  std::vector<float> ssm;   // (B, d_inner, d_state)
  void reset(const ModelConfig& cfg, int B);
};

// residual (B, T, D) += Mamba(xn (B, T, D)): the parallel form.
void mamba_layer_forward(float* residual, MambaActivations& act, const float* xn, const MambaWeights& w,
                         const ModelConfig& cfg, int B, int T, bool reference);

struct StepSequence;
// The recurrent form over a batch of sequences: residual (rows, D) += Mamba(xn (rows, D)), where sequence i
// owns rows [seqs[i].row, + seqs[i].n) and continues from states[i] (B = 1), which advances past them.
// Projections run over all rows at once; conv and scan per sequence.
void mamba_layer_step(float* residual, MambaActivations& act, const float* xn, const MambaWeights& w,
                      const ModelConfig& cfg, const StepSequence* seqs, size_t count,
                      MambaState* const* states);
// dxn (B, T, D) = gradient w.r.t. xn (+= when accumulate_dxn); weight gradients accumulate into dw.
void mamba_layer_backward(float* dxn, const MambaWeights& dw, MambaScratch& scratch, const float* dresidual,
                          const MambaActivations& act, const float* xn, const MambaWeights& w,
                          const ModelConfig& cfg, int B, int T, bool reference, bool accumulate_dxn = false);

}  // namespace bmojo
