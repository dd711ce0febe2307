#include "kernels/cross_entropy.hpp"

#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "kernels/vector_math.hpp"

namespace bmojo {

CrossEntropyResult cross_entropy_forward_backward(float* logits, const int32_t* targets, int64_t N, int V,
                                                  float grad_scale, bool want_grad) {
  const profile::Scope scope("cross_entropy_forward_backward");
  static thread_local std::vector<double> row_loss;
  static thread_local std::vector<int> row_correct;
  row_loss.assign(N, 0.0);
  row_correct.assign(N, 0);
  double* losses = row_loss.data();
  int* hits = row_correct.data();
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * V))
  for (int64_t i = 0; i < N; ++i) {
    float* z = logits + i * V;
    const int arg = argmax_of(z, V);
    const float mx = z[arg];
    const int y = targets[i];
    const float zy = z[y];
    // One vectorised exp pass; with want_grad z then holds exp(z - max) (the softmax numerators).
    float sum = 0.0f;
    if (want_grad) {
#pragma omp simd reduction(+ : sum)
      for (int c = 0; c < V; ++c) {
        z[c] = fast_exp(z[c] - mx);
        sum += z[c];
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int c = 0; c < V; ++c) sum += fast_exp(z[c] - mx);
    }
    losses[i] = std::log(static_cast<double>(sum)) - (zy - mx);
    hits[i] = (arg == y);
    if (want_grad) {
      const float scale = grad_scale / sum;
#pragma omp simd
      for (int c = 0; c < V; ++c) z[c] *= scale;
      z[y] -= grad_scale;
    }
  }
  CrossEntropyResult r;
  for (int64_t i = 0; i < N; ++i) {
    r.loss_sum += row_loss[i];
    r.correct += row_correct[i];
  }
  return r;
}

}  // namespace bmojo
