#include "model/bmojo_layer.hpp"

#include <algorithm>
#include <cstring>

#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "kernels/linear.hpp"
#include "model/innovation.hpp"

namespace bmojo {

namespace {

struct Shapes {
  AttentionDims d;
  int D, qd, kvd, width;
  int64_t N;
};

Shapes shapes_of(const ModelConfig& cfg, int B, int T) {
  Shapes s;
  s.d.B = B;
  s.d.T = T;
  s.d.H = cfg.n_heads;
  s.d.Hk = cfg.kv_heads();
  s.d.Dh = cfg.head_dim();
  s.d.window = cfg.window;
  s.D = cfg.d_model;
  s.qd = s.d.H * s.d.Dh;
  s.kvd = s.d.Hk * s.d.Dh;
  s.width = s.qd + 2 * s.kvd;
  s.N = static_cast<int64_t>(B) * T;
  return s;
}

}  // namespace

SelectionRule selection_rule_of(const ModelConfig& cfg) {
  SelectionRule r;
  r.window = cfg.window;
  r.per_chunk = cfg.eidetic_per_chunk;
  r.capacity = cfg.eidetic_capacity;
  r.tau = cfg.tau;
  r.eviction = parse_eviction(cfg.eviction);
  return r;
}

bool uses_eidetic_memory(char kind, const ModelConfig& cfg) {
  return layer_parts(kind, cfg).eidetic;
}

namespace {

// Fading projections: the column slice [Wk | Wv] of the fused QKV weight when tied, else their own weight.
const float* fading_weight(const LayerWeights& w, const Shapes& s, const ModelConfig& cfg, int* ld) {
  *ld = cfg.tie_fading ? s.width : 2 * s.kvd;
  return cfg.tie_fading ? w.attn.wqkv + s.qd : w.bmojo.wkvf;
}

AttentionInputs inputs_of(const BmojoActivations& act, const Shapes& s, const ModelConfig& cfg,
                          bool eidetic) {
  AttentionInputs in;
  in.q = act.qkv.data();
  in.ldq = s.width;
  in.k = act.qkv.data() + s.qd;
  in.v = act.qkv.data() + s.qd + s.kvd;
  in.ldkv = s.width;
  if (cfg.fading) {
    in.kf = act.kvf.data();
    in.vf = act.kvf.data() + s.kvd;
    in.ldf = 2 * s.kvd;
  }
  if (eidetic) {
    in.q_raw = act.qk_raw.data();
    in.ldq_raw = s.qd + s.kvd;
    in.k_raw = act.qk_raw.data() + s.qd;
    in.ldk_raw = s.qd + s.kvd;
    in.eidetic = &act.plan;
  }
  return in;
}

}  // namespace

void bmojo_layer_forward(float* residual, BmojoActivations& act, const float* xn, const LayerWeights& w,
                         const ModelConfig& cfg, const RopeTable& rope, int B, int T, bool reference,
                         bool keep_selection) {
  const profile::Scope scope("bmojo_layer_forward");  // own copies, elementwise passes
  const Shapes s = shapes_of(cfg, B, T);
  const bool innovation = w.kind == 'B';
  if (layer_parts(w.kind, cfg).ssm) {
    act.y.assign(s.N * s.D, 0.0f);
    mamba_layer_forward(act.y.data(), act.ssm, xn, w.mamba, cfg, B, T, reference);
  }

  act.qkv.resize(s.N * s.width);
  float* qkv = act.qkv.data();
  linear_forward(qkv, s.width, xn, s.D, w.attn.wqkv, s.width, s.N, s.D, s.width);
  const bool eidetic = uses_eidetic_memory(w.kind, cfg);
  if (eidetic) {
    const int qk = s.qd + s.kvd;
    act.qk_raw.resize(s.N * qk);
    for (int64_t i = 0; i < s.N; ++i) std::memcpy(&act.qk_raw[i * qk], qkv + i * s.width, sizeof(float) * qk);
  }
  rope_apply(qkv, s.width, B, T, s.d.H, 0, rope, false);
  rope_apply(qkv + s.qd, s.width, B, T, s.d.Hk, 0, rope, false);

  if (cfg.fading) {
    int ldw = 0;
    const float* wf = fading_weight(w, s, cfg, &ldw);
    act.kvf.resize(s.N * 2 * s.kvd);
    linear_forward(act.kvf.data(), 2 * s.kvd, act.y.data(), s.D, wf, ldw, s.N, s.D, 2 * s.kvd);
    rope_apply(act.kvf.data(), 2 * s.kvd, B, T, s.d.Hk, 0, rope, false);
  }

  // A plan about to be recomputed keeps its buffers (no allocation in the training step).
  if (!keep_selection && !(innovation && eidetic)) act.plan = EideticPlan{};
  if (innovation) {
    act.innovation_error.resize(s.N * s.D);
    act.scores.resize(s.N);
    act.innovation_mean = innovation_forward(act.scores.data(), act.innovation_error.data(), xn, act.y.data(),
                                             w.bmojo.innovation, B, T, s.D);
    if (eidetic && !keep_selection)
      plan_eidetic_memory(act.plan, act.scores.data(), B, T, selection_rule_of(cfg));
  }

  act.output.resize(s.N * s.qd);
  act.lse.resize(static_cast<size_t>(B) * s.d.H * T);
  const AttentionInputs in = inputs_of(act, s, cfg, eidetic);
  (reference ? attention_forward_reference : attention_forward)(act.output.data(), s.qd, act.lse.data(), in,
                                                                s.d);
  linear_forward(residual, s.D, act.output.data(), s.qd, w.attn.wo, s.D, s.N, s.qd, s.D, 1.0f);
}

void bmojo_layer_backward(float* dxn, const LayerWeights& dw, BmojoScratch& sc, const float* dresidual,
                          const BmojoActivations& act, const float* xn, const LayerWeights& w,
                          const ModelConfig& cfg, const RopeTable& rope, int B, int T, bool reference) {
  const profile::Scope scope("bmojo_layer_backward");  // own copies, elementwise passes
  const Shapes s = shapes_of(cfg, B, T);
  const bool innovation = w.kind == 'B';
  const bool eidetic = uses_eidetic_memory(w.kind, cfg) && !act.plan.empty();
  sc.doutput.resize(s.N * s.qd);
  sc.dqkv.resize(s.N * s.width);
  linear_backward(sc.doutput.data(), s.qd, dw.attn.wo, s.D, dresidual, s.D, act.output.data(), s.qd,
                  w.attn.wo, s.N, s.qd, s.D, false);

  AttentionGrads g;
  g.dq = sc.dqkv.data();
  g.dk = sc.dqkv.data() + s.qd;
  g.dv = sc.dqkv.data() + s.qd + s.kvd;
  if (cfg.fading) {
    sc.dkvf.resize(s.N * 2 * s.kvd);
    g.dkf = sc.dkvf.data();
    g.dvf = sc.dkvf.data() + s.kvd;
  }
  const int qk = s.qd + s.kvd;
  if (eidetic) {
    sc.dqk_raw.resize(s.N * qk);
    g.dq_raw = sc.dqk_raw.data();
    g.dk_raw = sc.dqk_raw.data() + s.qd;
  }
  const AttentionInputs in = inputs_of(act, s, cfg, eidetic);
  (reference ? attention_backward_reference : attention_backward)(g, sc.doutput.data(), act.output.data(),
                                                                  s.qd, act.lse.data(), in, s.d);
  float* dqkv = sc.dqkv.data();
  rope_apply(dqkv, s.width, B, T, s.d.H, 0, rope, true);
  rope_apply(dqkv + s.qd, s.width, B, T, s.d.Hk, 0, rope, true);
  if (eidetic) {
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(s.N) * qk))
    for (int64_t i = 0; i < s.N; ++i)
      for (int c = 0; c < qk; ++c) dqkv[i * s.width + c] += sc.dqk_raw[i * qk + c];
  }
  linear_backward(dxn, s.D, dw.attn.wqkv, s.width, dqkv, s.width, xn, s.D, w.attn.wqkv, s.N, s.D, s.width,
                  false);

  if (!cfg.fading && !innovation) return;
  sc.dy.assign(s.N * s.D, 0.0f);
  if (cfg.fading) {
    rope_apply(sc.dkvf.data(), 2 * s.kvd, B, T, s.d.Hk, 0, rope, true);
    int ldw = 0;
    const float* wf = fading_weight(w, s, cfg, &ldw);
    float* dwf = cfg.tie_fading ? dw.attn.wqkv + s.qd : dw.bmojo.wkvf;
    linear_backward(sc.dy.data(), s.D, dwf, ldw, sc.dkvf.data(), 2 * s.kvd, act.y.data(), s.D, wf, s.N, s.D,
                    2 * s.kvd, false);
  }
  if (innovation)
    innovation_backward(dw.bmojo.innovation, sc.dy.data(), cfg.lambda_innov, act.innovation_error.data(),
                        act.y.data(), w.bmojo.innovation, B, T, s.D);
  mamba_layer_backward(dxn, dw.mamba, sc.ssm, sc.dy.data(), act.ssm, xn, w.mamba, cfg, B, T, reference, true);
}

}  // namespace bmojo
