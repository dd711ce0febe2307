#include "kernels/cross_entropy.hpp"

#include <cmath>
#include <vector>

#include "core/parallel.hpp"

namespace bmojo {

CrossEntropyResult cross_entropy_forward_backward(float* logits, const int32_t* targets, int64_t N, int V,
                                                  float grad_scale, bool want_grad) {
  static thread_local std::vector<double> row_loss;
  static thread_local std::vector<int> row_correct;
  row_loss.assign(N, 0.0);
  row_correct.assign(N, 0);
  double* losses = row_loss.data();
  int* hits = row_correct.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    float* z = logits + i * V;
    float mx = z[0];
    int arg = 0;
    for (int c = 1; c < V; ++c)
      if (z[c] > mx) mx = z[c], arg = c;
    double sum = 0.0;
    for (int c = 0; c < V; ++c) sum += std::exp(static_cast<double>(z[c] - mx));
    const int y = targets[i];
    losses[i] = std::log(sum) - (z[y] - mx);
    hits[i] = (arg == y);
    if (want_grad) {
      const float inv = static_cast<float>(1.0 / sum);
      for (int c = 0; c < V; ++c) z[c] = std::exp(z[c] - mx) * inv * grad_scale;
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
