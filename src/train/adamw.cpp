#include "train/adamw.hpp"

#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

float learning_rate(const TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return static_cast<float>(t.lr * static_cast<double>(step + 1) / t.warmup_steps);
  const int64_t decay_steps = std::max<int64_t>(1, t.steps - t.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
  return static_cast<float>(t.lr * (t.min_lr_ratio + (1.0 - t.min_lr_ratio) * cosine));
}

double global_norm(const float* g, size_t n) {
  const profile::Scope scope("global_norm");
  const int threads = omp_get_max_threads();
  // The calling thread's buffer, reused (no allocation in the training step); the workers write through
  // a pointer to it, not through the thread_local name, which would name their own.
  thread_local std::vector<double> partial;
  partial.assign(threads, 0.0);
  double* sums = partial.data();
#pragma omp parallel num_threads(threads)
  {
    int64_t begin, end;
    split_range(static_cast<int64_t>(n), omp_get_thread_num(), omp_get_num_threads(), begin, end);
    double s = 0.0;
    for (int64_t i = begin; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
    sums[omp_get_thread_num()] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

void scale_in_place(float* x, size_t n, float factor) {
  const profile::Scope scope("scale_in_place");
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) x[i] *= factor;
}

void AdamW::step(float* params, const float* grads, const ParameterLayout& layout, float lr,
                 const TrainConfig& t) {
  const profile::Scope scope("adamw_step");
  ++steps_;
  const float bc1 = static_cast<float>(1.0 - std::pow(t.beta1, static_cast<double>(steps_)));
  const float bc2 = static_cast<float>(1.0 - std::pow(t.beta2, static_cast<double>(steps_)));
  const float beta1 = static_cast<float>(t.beta1), beta2 = static_cast<float>(t.beta2);
  const float eps = static_cast<float>(t.adam_eps);
  float* m = m_.data();
  float* v = v_.data();
  for (const TensorSpec& spec : layout.tensors()) {
    const float decay = spec.weight_decay ? static_cast<float>(t.weight_decay) : 0.0f;
    const size_t o = spec.offset;
#pragma omp parallel for schedule(static)
    for (size_t i = o; i < o + spec.numel; ++i) {
      const float g = grads[i];
      m[i] = beta1 * m[i] + (1.0f - beta1) * g;
      v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
      const float mhat = m[i] / bc1, vhat = v[i] / bc2;
      params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + decay * params[i]);
    }
  }
}

}  // namespace bmojo
