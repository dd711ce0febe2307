// The stack's recurrent step (SPEC section 5) over a batch of sequences, each at its own position with its
// own state: embedding, each layer's step (attention_layer_step, mamba_layer_step, bmojo_layer_step, beside
// each kind's parallel form), the MLP, the final norm and the LM head. Every projection is one matrix
// product over the rows of all the sequences, so a batch reads the weights once per step. A block of one
// token per sequence is decode; longer blocks are chunked prefill, which leaves exactly the state the
// one-token steps would have left (the same code). Sequences may bring blocks of different lengths.
#pragma once
#include <cstdint>
#include <vector>

#include "model/layer_state.hpp"
#include "model/model.hpp"

namespace bmojo {

struct SequenceState {
  int64_t position = 0;  // tokens consumed
  std::vector<LayerState> layers;
  size_t bytes() const;              // the state proper, summed over the layers
  double decode_read_bytes() const;  // what the next one-token step reads of it (LayerState's)
  KvStorage storage() const;         // bf16 when any layer keeps its keys and values as bf16
};

// The empty state of a sequence (zeros before the first token) for this config, its attention keys and
// values stored as `storage` says.
SequenceState empty_sequence_state(const ModelConfig& cfg, KvStorage storage = KvStorage::f32);

// Buffers a step reuses (not state).
struct StackScratch {
  StepScratch layer;
  std::vector<float> residual, xn, rstd, gate_up, act, final, last;
  std::vector<StepSequence> seqs;
  std::vector<LayerState*> states;
};

// Advances sequences[i] by counts[i] >= 1 tokens; tokens holds every sequence's tokens one after another
// (the caller checks them against the vocabulary, and positions against kMaxPosition). logits, when not
// null: with all_logits one row (V) per token in the same order, else one row per sequence, for its last
// token. reference: the plain attention kernel (tests).
void model_step(const Model& model, SequenceState* const* sequences, const int64_t* counts, size_t count,
                const int32_t* tokens, float* logits, bool all_logits, StackScratch& scratch,
                bool reference = false);

}  // namespace bmojo
