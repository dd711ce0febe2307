#include "model/attention_layer.hpp"

#include <algorithm>

#include "kernels/linear.hpp"
#include "model/layer_state.hpp"

namespace bmojo {

namespace {

AttentionDims dims_of(const ModelConfig& cfg, int B, int T) {
  AttentionDims d;
  d.B = B;
  d.T = T;
  d.H = cfg.n_heads;
  d.Hk = cfg.kv_heads();
  d.Dh = cfg.head_dim();
  d.window = cfg.window;
  return d;
}

// q, k, v side by side in one row of the fused projection: [q (qd) | k (kvd) | v (kvd)].
AttentionInputs inputs_of(const float* qkv, int qd, int kvd) {
  AttentionInputs in;
  in.q = qkv;
  in.ldq = qd + 2 * kvd;
  in.k = qkv + qd;
  in.v = qkv + qd + kvd;
  in.ldkv = qd + 2 * kvd;
  return in;
}

}  // namespace

void attention_layer_forward(float* residual, AttentionActivations& act, const float* xn,
                             const AttentionWeights& w, const ModelConfig& cfg, const RopeTable& rope, int B,
                             int T, bool reference) {
  const AttentionDims d = dims_of(cfg, B, T);
  const int D = cfg.d_model, qd = d.H * d.Dh, kvd = d.Hk * d.Dh, width = qd + 2 * kvd;
  const int64_t N = static_cast<int64_t>(B) * T;
  act.qkv.resize(N * width);
  act.output.resize(N * qd);
  act.lse.resize(static_cast<size_t>(B) * d.H * T);
  float* qkv = act.qkv.data();
  linear_forward(qkv, width, xn, D, w.wqkv, width, N, D, width);
  rope_apply(qkv, width, B, T, d.H, 0, rope, false);
  rope_apply(qkv + qd, width, B, T, d.Hk, 0, rope, false);
  const AttentionInputs in = inputs_of(qkv, qd, kvd);
  (reference ? attention_forward_reference : attention_forward)(act.output.data(), qd, act.lse.data(), in, d);
  linear_forward(residual, D, act.output.data(), qd, w.wo, D, N, qd, D, 1.0f);
}

void attention_layer_backward(float* dxn, const AttentionWeights& dw, AttentionScratch& scratch,
                              const float* dresidual, const AttentionActivations& act, const float* xn,
                              const AttentionWeights& w, const ModelConfig& cfg, const RopeTable& rope, int B,
                              int T, bool reference) {
  const AttentionDims d = dims_of(cfg, B, T);
  const int D = cfg.d_model, qd = d.H * d.Dh, kvd = d.Hk * d.Dh, width = qd + 2 * kvd;
  const int64_t N = static_cast<int64_t>(B) * T;
  scratch.dqkv.resize(N * width);
  scratch.doutput.resize(N * qd);
  float* dqkv = scratch.dqkv.data();
  linear_backward(scratch.doutput.data(), qd, dw.wo, D, dresidual, D, act.output.data(), qd, w.wo, N, qd, D,
                  false);
  const float* qkv = act.qkv.data();
  const AttentionInputs in = inputs_of(qkv, qd, kvd);
  AttentionGrads g;
  g.dq = dqkv;
  g.dk = dqkv + qd;
  g.dv = dqkv + qd + kvd;
  (reference ? attention_backward_reference : attention_backward)(
      g, scratch.doutput.data(), act.output.data(), qd, act.lse.data(), in, d);
  rope_apply(dqkv, width, B, T, d.H, 0, rope, true);
  rope_apply(dqkv + qd, width, B, T, d.Hk, 0, rope, true);
  linear_backward(dxn, D, dw.wqkv, width, dqkv, width, xn, D, w.wqkv, N, D, width, false);
}

void step_qkv(StepScratch& s, const float* xn, const AttentionWeights& w, const ModelConfig& cfg,
              int64_t rows, bool keep_raw) {
  const int D = cfg.d_model, Dh = cfg.head_dim(), qd = cfg.n_heads * Dh, kvd = cfg.kv_heads() * Dh;
  const int width = qd + 2 * kvd, qk = qd + kvd;
  s.qkv.resize(rows * width);
  linear_forward(s.qkv.data(), width, xn, D, w.wqkv, width, rows, D, width);
  if (keep_raw) {
    s.qk_raw.resize(rows * qk);
    for (int64_t i = 0; i < rows; ++i) std::copy_n(s.qkv.data() + i * width, qk, s.qk_raw.data() + i * qk);
  }
  rope_rotate_rows(s.qkv.data(), width, rows, cfg.n_heads, Dh, s.rope_cos.data(), s.rope_sin.data());
  rope_rotate_rows(s.qkv.data() + qd, width, rows, cfg.kv_heads(), Dh, s.rope_cos.data(), s.rope_sin.data());
}

StepAttentionTask step_task(StepScratch& s, const ModelConfig& cfg, const StepSequence& seq,
                            const LayerState& st, int64_t i0, int64_t i1) {
  const int Dh = cfg.head_dim(), qd = cfg.n_heads * Dh, kvd = cfg.kv_heads() * Dh, width = qd + 2 * kvd;
  StepAttentionTask t;
  t.q = s.qkv.data() + (seq.row + i0) * width;
  t.ldq = width;
  t.out = s.out.data() + (seq.row + i0) * qd;
  t.ldo = qd;
  t.t0 = seq.position + i0;
  t.n = static_cast<int>(i1 - i0);
  if (st.kv.bf16())
    t.keys.window16 = st.kv.data16.data();
  else
    t.keys.window = st.kv.data.data();
  t.keys.window_first = st.kv.first;
  t.keys.ld = 2 * kvd;
  if (st.kvf.width > 0) {
    if (st.kvf.bf16())
      t.keys.fading16 = st.kvf.data16.data();
    else
      t.keys.fading = st.kvf.data.data();
    t.keys.fading_first = st.kvf.first;
  }
  return t;
}

void attention_layer_step(float* residual, StepScratch& s, const float* xn, const AttentionWeights& w,
                          const ModelConfig& cfg, const StepSequence* seqs, size_t count,
                          LayerState* const* states, bool reference) {
  const int D = cfg.d_model, Dh = cfg.head_dim(), qd = cfg.n_heads * Dh, kvd = cfg.kv_heads() * Dh;
  const int width = qd + 2 * kvd;
  int64_t rows = 0;
  for (size_t i = 0; i < count; ++i) rows = std::max(rows, seqs[i].row + seqs[i].n);
  step_qkv(s, xn, w, cfg, rows, false);
  s.out.resize(rows * qd);
  s.tasks.clear();
  for (size_t i = 0; i < count; ++i) {
    states[i]->kv.append(s.qkv.data() + seqs[i].row * width + qd, width, seqs[i].n);
    s.tasks.push_back(step_task(s, cfg, seqs[i], *states[i], 0, seqs[i].n));
  }
  AttentionDims d;
  d.H = cfg.n_heads;
  d.Hk = cfg.kv_heads();
  d.Dh = Dh;
  d.window = cfg.window;
  (reference ? attention_step_reference : attention_step)(s.tasks.data(), s.tasks.size(), d);
  linear_forward(residual, D, s.out.data(), qd, w.wo, D, rows, qd, D, 1.0f);
}

}  // namespace bmojo
