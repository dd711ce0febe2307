// AdamW over the parameter slab, the learning-rate schedule and global-norm gradient clipping (SPEC 7).
#pragma once
#include <cstdint>

#include "core/parameters.hpp"
#include "model/config.hpp"

namespace bmojo {

// Linear warm-up to the peak over warmup_steps, then cosine decay to min_lr_ratio * peak at `steps`.
// step is 0-based: the update about to be applied.
float learning_rate(const TrainConfig& t, int64_t step);

// sqrt(sum g^2) over n floats; deterministic for a given thread count.
double global_norm(const float* g, size_t n);
void scale_in_place(float* x, size_t n, float factor);

class AdamW {
 public:
  explicit AdamW(size_t slab_size) : m_(slab_size), v_(slab_size) {}
  // One update with bias correction; decay applies to tensors marked weight_decay.
  void step(float* params, const float* grads, const ParameterLayout& layout, float lr, const TrainConfig& t);
  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t s) { steps_ = s; }
  Slab& first_moment() { return m_; }
  Slab& second_moment() { return v_; }
  const Slab& first_moment() const { return m_; }
  const Slab& second_moment() const { return v_; }

 private:
  Slab m_, v_;
  int64_t steps_ = 0;
};

}  // namespace bmojo
