#include "kernels/rmsnorm.hpp"

#include <cmath>

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int D,
                     float eps) {
  const profile::Scope scope("rmsnorm_forward");
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * D))
  for (int64_t i = 0; i < N; ++i) {
    const float* x = inp + i * D;
    float* y = out + i * D;
    float ss = 0.0f;
    for (int c = 0; c < D; ++c) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / D + eps);
    rstd[i] = r;
    for (int c = 0; c < D; ++c) y[c] = x[c] * r * weight[c];
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int D) {
  const profile::Scope scope("rmsnorm_backward");
  // d x_c = r * w_c * g_c - x_c * r^3 / D * sum_j(w_j * g_j * x_j)
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * D))
  for (int64_t i = 0; i < N; ++i) {
    const float* x = inp + i * D;
    const float* g = dout + i * D;
    float* dx = dinp + i * D;
    const float r = rstd[i];
    float dot = 0.0f;
    for (int c = 0; c < D; ++c) dot += weight[c] * g[c] * x[c];
    const float k = dot * r * r * r / D;
    for (int c = 0; c < D; ++c) dx[c] += r * weight[c] * g[c] - x[c] * k;
  }
  reduce_rows(dweight, D, N, [&](float* part, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* x = inp + i * D;
      const float* g = dout + i * D;
      const float r = rstd[i];
      for (int c = 0; c < D; ++c) part[c] += g[c] * x[c] * r;
    }
  });
}

}  // namespace bmojo
