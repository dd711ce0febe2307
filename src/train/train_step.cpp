#include "train/train_step.hpp"

#include <cmath>

#include "core/profile.hpp"

namespace bmojo {

StepResult train_step(Model& model, AdamW& optimizer, const int32_t* tokens, const int32_t* targets, int B,
                      int T, float lr, const TrainConfig& train, const GradientHook& reduce_gradients) {
  StepResult r;
  const size_t n = model.layout().slab_size();
  {
    const profile::Scope scope("zero_grads");
    model.zero_grads();
  }
  r.loss = model.forward(tokens, targets, B, T);
  model.backward();
  if (reduce_gradients) reduce_gradients(model.grads(), n);
  r.grad_norm = global_norm(model.grads(), n);
  r.finite = std::isfinite(r.loss.objective()) && std::isfinite(r.grad_norm);
  if (!r.finite) return r;
  if (train.grad_clip > 0.0 && r.grad_norm > train.grad_clip)
    scale_in_place(model.grads(), n, static_cast<float>(train.grad_clip / r.grad_norm));
  optimizer.step(model.params(), model.grads(), model.layout(), lr, train);
  return r;
}

}  // namespace bmojo
