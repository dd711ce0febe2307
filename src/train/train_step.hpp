// One training step (SPEC section 7), the only one: the trainer, `bmojo bench`, `parity-dump` and the
// no-allocation test all run this, so what they measure or check is what training does. llm.c's
// zero_grad / forward / backward / update, with a hook between backward and the gradient norm: where a
// data-parallel run all-reduces the gradient slab.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "model/config.hpp"
#include "model/model.hpp"
#include "train/adamw.hpp"

namespace bmojo {

// Called with the gradient slab (layout().slab_size() floats) after backward(), before clipping.
using GradientHook = std::function<void(float* grads, size_t n)>;

struct StepResult {
  LossResult loss;
  double grad_norm = 0.0;  // before clipping
  // false when the objective or the gradient norm is not finite: the weights were then left as they were
  // (no clipping, no optimizer update), for the caller to stop.
  bool finite = true;
};

// tokens, targets (micro_batches * B, T): one forward and backward pass per micro-batch of B rows, their
// gradients summed with weights labelled_m / labelled (the gradient of the mean loss over all the rows,
// exactly when every micro-batch labels as many tokens, as MQAR's do), kept in `accumulated` (resized to
// the slab; needed when micro_batches > 1). Then the hook, the global-norm clip to train.grad_clip (0 =
// off) and one AdamW step at learning rate lr. The loss is the labelled-weighted mean over micro-batches.
StepResult train_step(Model& model, AdamW& optimizer, const int32_t* tokens, const int32_t* targets, int B,
                      int T, float lr, const TrainConfig& train, const GradientHook& reduce_gradients = {},
                      int micro_batches = 1, std::vector<float>* accumulated = nullptr);

}  // namespace bmojo
