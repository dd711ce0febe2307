// The B'MOJO mixers (SPEC sections 3-4). Letter F: the SSM branch (a Mamba mixer, section 2) turns the
// layer input into the fading sequence y, whose projections are the fading keys and values; one attention
// reads the W in-context keys and the W fading keys. Letter B adds the eidetic memory: innovation scores,
// per-chunk promotion and eviction (model/innovation.hpp), and entries read with position-free keys.
#pragma once
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/rope.hpp"
#include "model/config.hpp"
#include "model/innovation.hpp"
#include "model/mamba_layer.hpp"
#include "model/weights.hpp"

namespace bmojo {

// The selection rule of a B layer (window, k, m, tau, eviction) from the config.
SelectionRule selection_rule_of(const ModelConfig& cfg);
// True for B layers whose memory can hold anything (k > 0 and m > 0).
bool uses_eidetic_memory(char kind, const ModelConfig& cfg);

struct BmojoActivations {
  MambaActivations ssm;
  std::vector<float> y;       // (B, T, D) fading sequence: the SSM branch's output
  std::vector<float> qkv;     // (B, T, (H + 2Hk) Dh), q and k rotated
  std::vector<float> qk_raw;  // (B, T, (H + Hk) Dh) q and k before rotation (B layers: eidetic scores)
  std::vector<float> kvf;     // (B, T, 2 Hk Dh) fading keys (rotated) and values
  std::vector<float> output;  // (B, T, H Dh) attention output before Wo
  std::vector<float> lse;     // (B, H, T)
  std::vector<float> innovation_error;  // (B, T, D) e = x - y_prev P (B layers)
  std::vector<float> scores;            // (B, T) innovation scores s_t (B layers)
  double innovation_mean = 0.0;         // mean_t s_t (B layers)
  EideticPlan plan;                     // memory snapshot per chunk (B layers)
};

struct BmojoScratch {
  std::vector<float> dqkv, dqk_raw, dkvf, doutput, dy, dxn_ssm;
  MambaScratch ssm;
};

// residual (B, T, D) += Mixer(xn (B, T, D)) for a layer of kind 'F' or 'B'. keep_selection reuses act.plan
// from the previous call instead of selecting again (selection is discrete; tests freeze it to take finite
// differences through the chosen entries).
void bmojo_layer_forward(float* residual, BmojoActivations& act, const float* xn, const LayerWeights& w,
                         const ModelConfig& cfg, const RopeTable& rope, int B, int T, bool reference,
                         bool keep_selection = false);
// dxn (B, T, D) = gradient w.r.t. xn of the mixer output (dresidual) plus, for B layers, of
// lambda_innov * mean_t s_t; weight gradients accumulate into dw.
void bmojo_layer_backward(float* dxn, const LayerWeights& dw, BmojoScratch& scratch, const float* dresidual,
                          const BmojoActivations& act, const float* xn, const LayerWeights& w,
                          const ModelConfig& cfg, const RopeTable& rope, int B, int T, bool reference);

struct StepSequence;
struct LayerState;
struct StepScratch;

// The recurrent form of an F or B layer over a batch of sequences (model/layer_state.hpp): residual (rows,
// D) += Mixer(xn), sequence i owning rows [seqs[i].row, + seqs[i].n) and continuing from states[i]. The SSM
// branch steps (mamba_layer_step) into the fading sequence; a B layer scores each token's innovation, lets
// each chunk's queries read the memory as it stands, and promotes a completed chunk (evicted entries to
// the layer's store, if any, which then answers the next chunk's retrieval) before the next.
void bmojo_layer_step(float* residual, StepScratch& s, const float* xn, const LayerWeights& w,
                      const ModelConfig& cfg, const StepSequence* seqs, size_t count,
                      LayerState* const* states, bool reference);

}  // namespace bmojo
