#include "model/attention_layer.hpp"

#include "kernels/linear.hpp"

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

}  // namespace bmojo
