#include "model/model_step.hpp"

#include <algorithm>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/profile.hpp"
#include "kernels/embedding.hpp"
#include "kernels/linear.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rope.hpp"
#include "kernels/swiglu.hpp"
#include "model/attention_layer.hpp"
#include "model/bmojo_layer.hpp"
#include "model/mamba_layer.hpp"

namespace bmojo {

size_t SequenceState::bytes() const {
  size_t n = 0;
  for (const LayerState& l : layers) n += l.bytes();
  return n;
}

double SequenceState::decode_read_bytes() const {
  double n = 0.0;
  for (const LayerState& l : layers) n += l.decode_read_bytes();
  return n;
}

KvStorage SequenceState::storage() const {
  for (const LayerState& l : layers)
    if (l.kv.bf16() || l.kvf.bf16() || l.memory.bf16_rows()) return KvStorage::bf16;
  return KvStorage::f32;
}

SequenceState empty_sequence_state(const ModelConfig& cfg, KvStorage storage) {
  SequenceState s;
  s.layers.resize(cfg.layers.size());
  for (size_t l = 0; l < cfg.layers.size(); ++l) s.layers[l].reset(cfg.layers[l], cfg, storage);
  return s;
}

void model_step(const Model& model, SequenceState* const* sequences, const int64_t* counts, size_t count,
                const int32_t* tokens, float* logits, bool all_logits, StackScratch& x, bool reference) {
  const profile::Scope scope("model_step");
  const ModelConfig& cfg = model.config();
  const ModelWeights& w = model.weights();
  const int D = cfg.d_model, V = cfg.vocab_size, Dh = cfg.head_dim(), half = Dh / 2;
  x.seqs.resize(count);
  int64_t rows = 0;
  for (size_t i = 0; i < count; ++i) {
    check(counts[i] >= 1, "model_step: every sequence in a step needs at least one token");
    check(sequences[i]->layers.size() == cfg.layers.size(), "model_step: a sequence state of another model");
    x.seqs[i] = {rows, counts[i], sequences[i]->position};
    rows += counts[i];
  }
  if (count == 0) return;
  // A step over a few sequences (batched decode) reads the weights packed for few-row products. One
  // sequence never builds them (its decode reads the weights in place as fast), nor does a long step
  // (prefill), whose products go to sgemm.
  const auto packed_rows = [](int64_t n) { return n >= kPackedMinRows && n <= kPackedMaxRows; };
  std::shared_ptr<const PackedWeights> packed;
  if (count >= 2 && (packed_rows(rows) ||
                     (logits != nullptr && packed_rows(all_logits ? rows : static_cast<int64_t>(count)))))
    packed = model.packed_weights();
  const UsePackedWeights use_packed(packed.get());
  x.residual.resize(rows * D);
  x.xn.resize(rows * D);
  x.rstd.resize(rows);
  embedding_forward(x.residual.data(), tokens, w.embedding, rows, D);
  StepScratch& s = x.layer;
  s.rope_cos.resize(rows * half);
  s.rope_sin.resize(rows * half);
  for (const StepSequence& q : x.seqs)
    for (int64_t i = 0; i < q.n; ++i)
      rope_angles(s.rope_cos.data() + (q.row + i) * half, s.rope_sin.data() + (q.row + i) * half,
                  q.position + i, Dh, cfg.rope_base);

  x.states.resize(count);
  for (size_t l = 0; l < cfg.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    for (size_t i = 0; i < count; ++i) x.states[i] = &sequences[i]->layers[l];
    rmsnorm_forward(x.xn.data(), x.rstd.data(), x.residual.data(), lw.norm1, rows, D, cfg.norm_eps);
    if (lw.kind == 'M') {
      s.ssm_states.resize(count);
      for (size_t i = 0; i < count; ++i) s.ssm_states[i] = &x.states[i]->ssm;
      mamba_layer_step(x.residual.data(), s.mamba, x.xn.data(), lw.mamba, cfg, x.seqs.data(), count,
                       s.ssm_states.data());
    } else if (lw.kind == 'A') {
      attention_layer_step(x.residual.data(), s, x.xn.data(), lw.attn, cfg, x.seqs.data(), count,
                           x.states.data(), reference);
    } else {
      bmojo_layer_step(x.residual.data(), s, x.xn.data(), lw, cfg, x.seqs.data(), count, x.states.data(),
                       reference);
    }
    if (cfg.d_ff > 0) {
      const int F = cfg.d_ff;
      rmsnorm_forward(x.xn.data(), x.rstd.data(), x.residual.data(), lw.norm2, rows, D, cfg.norm_eps);
      x.gate_up.resize(rows * 2 * F);
      x.act.resize(rows * F);
      linear_forward(x.gate_up.data(), 2 * F, x.xn.data(), D, lw.mlp.w_in, 2 * F, rows, D, 2 * F);
      swiglu_forward(x.act.data(), x.gate_up.data(), rows, F);
      linear_forward(x.residual.data(), D, x.act.data(), F, lw.mlp.w_out, D, rows, F, D, 1.0f);
    }
  }
  for (size_t i = 0; i < count; ++i) sequences[i]->position += counts[i];
  if (logits == nullptr) return;
  // The final norm and the head over the rows that get logits: every row, or each sequence's last.
  const float* head_in = x.residual.data();
  int64_t head_rows = rows;
  if (!all_logits) {
    x.last.resize(count * D);
    for (size_t i = 0; i < count; ++i)
      std::copy_n(x.residual.data() + (x.seqs[i].row + x.seqs[i].n - 1) * D, D, x.last.data() + i * D);
    head_in = x.last.data();
    head_rows = static_cast<int64_t>(count);
  }
  x.final.resize(head_rows * D);
  rmsnorm_forward(x.final.data(), x.rstd.data(), head_in, w.norm_f, head_rows, D, cfg.norm_eps);
  matmul(false, true, static_cast<int>(head_rows), V, D, 1.0f, x.final.data(), D, w.lm_head, D, 0.0f, logits,
         V);
}

}  // namespace bmojo
