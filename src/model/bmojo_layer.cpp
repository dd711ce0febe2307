#include "model/bmojo_layer.hpp"

#include <algorithm>
#include <cstring>

#include "core/blas.hpp"
#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "kernels/linear.hpp"
#include "model/attention_layer.hpp"
#include "model/innovation.hpp"
#include "model/layer_state.hpp"

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

namespace {

// Promotes the chunk that ends at chunk_start + W (its evicted entries go to the store), then reads the next
// chunk's entries from the store with the chunk's mean unrotated query.
void finish_chunk(LayerState& st, StepScratch& s, const ModelConfig& cfg, int64_t chunk_start) {
  const int W = cfg.window, Dh = cfg.head_dim(), Hk = cfg.kv_heads(), row = 2 * Hk * Dh;
  s.evicted.clear();
  s.evicted_rows.clear();
  st.memory.promote_chunk(st.chunk_scores.data(), chunk_start, &s.evicted, st.chunk_kv.data(),
                          &s.evicted_rows);
  if (st.store != nullptr) {
    for (size_t e = 0; e < s.evicted.size(); ++e)
      st.store->add(s.evicted[e].position, s.evicted[e].score, s.evicted_rows.data() + e * row);
    const float inv = 1.0f / static_cast<float>(W * (cfg.n_heads / Hk));
    for (float& v : st.chunk_qsum) v *= inv;
    const std::vector<std::vector<RetrievedEntry>> got =
        st.store->retrieve(st.chunk_qsum.data(), st.retrieve);
    st.retrieved_kv.assign(Hk, {});
    st.retrieved_positions.assign(Hk, {});
    for (int g = 0; g < Hk && g < static_cast<int>(got.size()); ++g)
      for (const RetrievedEntry& e : got[g]) {
        st.retrieved_positions[g].push_back(e.position);
        st.retrieved_kv[g].insert(st.retrieved_kv[g].end(), e.kv.begin(), e.kv.end());
      }
  }
  std::fill(st.chunk_qsum.begin(), st.chunk_qsum.end(), 0.0f);
}

}  // namespace

void bmojo_layer_step(float* residual, StepScratch& s, const float* xn, const LayerWeights& w,
                      const ModelConfig& cfg, const StepSequence* seqs, size_t count,
                      LayerState* const* states, bool reference) {
  const profile::Scope scope("bmojo_layer_step");
  const LayerParts parts = layer_parts(w.kind, cfg);
  const Shapes sh = shapes_of(cfg, 1, 1);
  const int D = sh.D, qd = sh.qd, kvd = sh.kvd, width = sh.width, W = cfg.window, Dh = sh.d.Dh;
  const int qk = qd + kvd, group = sh.d.H / sh.d.Hk;
  int64_t rows = 0;
  for (size_t i = 0; i < count; ++i) rows = std::max(rows, seqs[i].row + seqs[i].n);

  // The fading sequence y: the SSM branch's output (not added to the residual).
  s.y.assign(rows * D, 0.0f);
  if (parts.ssm) {
    s.ssm_states.resize(count);
    for (size_t i = 0; i < count; ++i) s.ssm_states[i] = &states[i]->ssm;
    mamba_layer_step(s.y.data(), s.mamba, xn, w.mamba, cfg, seqs, count, s.ssm_states.data());
  }
  step_qkv(s, xn, w.attn, cfg, rows, parts.eidetic);
  for (size_t i = 0; i < count; ++i)
    states[i]->kv.append(s.qkv.data() + seqs[i].row * width + qd, width, seqs[i].n);
  if (parts.fading) {
    int ldw = 0;
    const float* wf = fading_weight(w, sh, cfg, &ldw);
    s.kvf.resize(rows * 2 * kvd);
    linear_forward(s.kvf.data(), 2 * kvd, s.y.data(), D, wf, ldw, rows, D, 2 * kvd);
    rope_rotate_rows(s.kvf.data(), 2 * kvd, rows, sh.d.Hk, Dh, s.rope_cos.data(), s.rope_sin.data());
    for (size_t i = 0; i < count; ++i)
      states[i]->kvf.append(s.kvf.data() + seqs[i].row * 2 * kvd, 2 * kvd, seqs[i].n);
  }
  s.out.resize(rows * qd);
  AttentionDims d = sh.d;
  const auto attend = [&] {
    (reference ? attention_step_reference : attention_step)(s.tasks.data(), s.tasks.size(), d);
  };
  s.tasks.clear();
  if (!parts.eidetic) {
    for (size_t i = 0; i < count; ++i)
      s.tasks.push_back(step_task(s, cfg, seqs[i], *states[i], 0, seqs[i].n));
    attend();
    linear_forward(residual, D, s.out.data(), qd, w.attn.wo, D, rows, qd, D, 1.0f);
    return;
  }

  // Innovation scores s_t = |x_t - y_{t-1} P|^2 / D, y_{t-1} carried across steps in y_prev.
  s.err.assign(xn, xn + rows * D);
  s.yshift.resize(rows * D);
  for (size_t i = 0; i < count; ++i) {
    const StepSequence& q = seqs[i];
    std::copy_n(states[i]->y_prev.data(), D, s.yshift.data() + q.row * D);
    if (q.n > 1) std::copy_n(s.y.data() + q.row * D, (q.n - 1) * D, s.yshift.data() + (q.row + 1) * D);
    std::copy_n(s.y.data() + (q.row + q.n - 1) * D, D, states[i]->y_prev.data());
  }
  matmul(false, false, static_cast<int>(rows), D, D, -1.0f, s.yshift.data(), D, w.bmojo.innovation, D, 1.0f,
         s.err.data(), D);
  s.scores.resize(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double v = 0.0;
    for (int c = 0; c < D; ++c) v += static_cast<double>(s.err[r * D + c]) * s.err[r * D + c];
    s.scores[r] = static_cast<float>(v / D);
  }

  // Rounds: in round k every sequence runs its k-th segment (its rows up to the next chunk boundary), all
  // sequences' segments in one kernel call; then each sequence whose segment completed a chunk promotes it.
  std::vector<int64_t> done(count, 0);  // rows of each sequence processed
  for (;;) {
    s.tasks.clear();
    std::vector<size_t> who;
    std::vector<int64_t> seg_end;
    for (size_t i = 0; i < count; ++i) {
      const StepSequence& q = seqs[i];
      if (done[i] >= q.n) continue;
      const int64_t t = q.position + done[i];
      const int64_t end = std::min(q.position + q.n, (t / W + 1) * W);
      who.push_back(i);
      seg_end.push_back(end);
    }
    if (who.empty()) break;
    s.memory_positions.resize(who.size());
    s.retrieved.resize(who.size());
    s.retrieved_positions.resize(who.size());
    s.retrieved_count.resize(who.size());
    for (size_t j = 0; j < who.size(); ++j) {
      const size_t i = who[j];
      const LayerState& st = *states[i];
      StepAttentionTask task = step_task(s, cfg, seqs[i], st, done[i], seg_end[j] - seqs[i].position);
      task.q_raw = s.qk_raw.data() + (seqs[i].row + done[i]) * qk;
      task.ldq_raw = qk;
      std::vector<int64_t>& pos = s.memory_positions[j];
      pos.clear();
      for (const EideticEntry& e : st.memory.entries()) pos.push_back(e.position);
      if (st.memory.bf16_rows())
        task.keys.memory16 = st.memory.rows16().data();
      else
        task.keys.memory = st.memory.rows().data();
      task.keys.memory_positions = pos.data();
      task.keys.memory_count = static_cast<int>(pos.size());
      if (!st.retrieved_kv.empty()) {
        s.retrieved[j].assign(sh.d.Hk, nullptr);
        s.retrieved_positions[j].assign(sh.d.Hk, nullptr);
        s.retrieved_count[j].assign(sh.d.Hk, 0);
        for (int g = 0; g < sh.d.Hk; ++g) {
          s.retrieved[j][g] = st.retrieved_kv[g].data();
          s.retrieved_positions[j][g] = st.retrieved_positions[g].data();
          s.retrieved_count[j][g] = static_cast<int>(st.retrieved_positions[g].size());
        }
        task.keys.retrieved = s.retrieved[j].data();
        task.keys.retrieved_positions = s.retrieved_positions[j].data();
        task.keys.retrieved_count = s.retrieved_count[j].data();
      }
      s.tasks.push_back(task);
    }
    attend();
    for (size_t j = 0; j < who.size(); ++j) {
      const size_t i = who[j];
      const StepSequence& q = seqs[i];
      LayerState& st = *states[i];
      for (int64_t p = q.position + done[i]; p < seg_end[j]; ++p) {
        const int64_t r = q.row + (p - q.position), slot = p % W;
        st.chunk_scores[slot] = s.scores[r];
        float* dst = st.chunk_kv.data() + slot * 2 * kvd;
        std::copy_n(s.qk_raw.data() + r * qk + qd, kvd, dst);
        std::copy_n(s.qkv.data() + r * width + qd + kvd, kvd, dst + kvd);
        for (int h = 0; h < sh.d.H; ++h) {
          const float* qh = s.qk_raw.data() + r * qk + h * Dh;
          float* sum = st.chunk_qsum.data() + (h / group) * Dh;
          for (int c = 0; c < Dh; ++c) sum[c] += qh[c];
        }
      }
      if (seg_end[j] % W == 0) finish_chunk(st, s, cfg, seg_end[j] - W);
      done[i] = seg_end[j] - q.position;
    }
  }
  linear_forward(residual, D, s.out.data(), qd, w.attn.wo, D, rows, qd, D, 1.0f);
}

}  // namespace bmojo
