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

struct StepSequence;
struct LayerState;
struct StepScratch;

// The recurrent form over a batch of sequences (model/layer_state.hpp): residual (rows, D) += Attention(xn),
// sequence i owning rows [seqs[i].row, + seqs[i].n) at its positions; its keys and values are appended to
// states[i]->kv and its queries read the cache. reference: the plain attention kernel.
void attention_layer_step(float* residual, StepScratch& s, const float* xn, const AttentionWeights& w,
                          const ModelConfig& cfg, const StepSequence* seqs, size_t count,
                          LayerState* const* states, bool reference);

// Pieces of that step the F and B steps share. s.qkv (rows, (H + 2Hk) Dh) = xn Wqkv with q and k rotated
// at each row's position (angles in s.rope_cos/sin); with keep_raw, s.qk_raw (rows, (H + Hk) Dh) keeps
// [q | k] before rotation.
void step_qkv(StepScratch& s, const float* xn, const AttentionWeights& w, const ModelConfig& cfg,
              int64_t rows, bool keep_raw);
// The attention task of rows [i0, i1) of a sequence (offsets within its rows) over its window and fading
// caches, writing s.out.
StepAttentionTask step_task(StepScratch& s, const ModelConfig& cfg, const StepSequence& seq,
                            const LayerState& st, int64_t i0, int64_t i1);

}  // namespace bmojo
