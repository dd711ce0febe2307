#include "train/train_step.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/profile.hpp"

namespace bmojo {

StepResult train_step(Model& model, AdamW& optimizer, const int32_t* tokens, const int32_t* targets, int B,
                      int T, float lr, const TrainConfig& train, const GradientHook& reduce_gradients,
                      int micro_batches, std::vector<float>* accumulated) {
  StepResult r;
  const size_t n = model.layout().slab_size();
  check(micro_batches == 1 || accumulated != nullptr, "train_step: micro-batches need an accumulation slab");
  double loss_sum = 0.0, innovation_sum = 0.0;
  if (micro_batches > 1) accumulated->resize(n);
  for (int m = 0; m < micro_batches; ++m) {
    {
      const profile::Scope scope("zero_grads");
      model.zero_grads();
    }
    const size_t row0 = static_cast<size_t>(m) * B * T;
    const LossResult l = model.forward(tokens + row0, targets + row0, B, T);
    model.backward();
    if (micro_batches == 1) {
      r.loss = l;
      break;
    }
    // Summed as labelled_m * gradient_m (the gradient of the summed loss), divided by the total at the end.
    const float w = static_cast<float>(l.labelled);
    float* acc = accumulated->data();
    const float* g = model.grads();
    if (m == 0) {
      for (size_t i = 0; i < n; ++i) acc[i] = w * g[i];
    } else {
      for (size_t i = 0; i < n; ++i) acc[i] += w * g[i];
    }
    loss_sum += l.loss * l.labelled;
    innovation_sum += l.innovation_loss * l.labelled;
    r.loss.correct += l.correct;
    r.loss.labelled += l.labelled;
  }
  if (micro_batches > 1) {
    const double total = std::max<int64_t>(r.loss.labelled, 1);
    r.loss.loss = loss_sum / total;
    r.loss.innovation_loss = innovation_sum / total;
    const float inv = static_cast<float>(1.0 / total);
    float* g = model.grads();
    const float* acc = accumulated->data();
    for (size_t i = 0; i < n; ++i) g[i] = acc[i] * inv;
  }
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
