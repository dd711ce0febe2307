#include "kernels/causal_conv.hpp"

#include <algorithm>

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

void causal_conv_forward(float* out, const float* x, int64_t ldx, const float* w, const float* bias, int B,
                         int T, int C, int K) {
  const profile::Scope scope("causal_conv_forward");
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(static_cast <double>(B) * T * C * K))
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      float* o = out + (static_cast<int64_t>(b) * T + t) * C;
      for (int c = 0; c < C; ++c) o[c] = bias[c];
      for (int k = 0; k < K; ++k) {
        const int src = t - (K - 1) + k;
        if (src < 0) continue;
        const float* xs = x + (static_cast<int64_t>(b) * T + src) * ldx;
        for (int c = 0; c < C; ++c) o[c] += w[c * K + k] * xs[c];
      }
    }
}

void causal_conv_step(float* out, const float* x, int64_t ldx, const float* w, const float* bias,
                      float* const* states, int64_t count, int C, int K) {
  const profile::Scope scope("causal_conv_step");
  const int P = K - 1;
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(count) * C * K))
  for (int64_t i = 0; i < count; ++i) {
    float* o = out + i * C;
    float* st = states[i];
    const float* xi = x + i * ldx;
    // The taps in causal_conv_forward's order (the same sums, bit for bit).
    for (int c = 0; c < C; ++c) o[c] = bias[c];
    for (int k = 0; k < P; ++k) {
      const float* row = st + static_cast<int64_t>(k) * C;
      for (int c = 0; c < C; ++c) o[c] += w[c * K + k] * row[c];
    }
    for (int c = 0; c < C; ++c) o[c] += w[c * K + P] * xi[c];
    for (int k = 0; k + 1 < P; ++k)
      std::copy_n(st + static_cast<int64_t>(k + 1) * C, C, st + static_cast<int64_t>(k) * C);
    if (P > 0) std::copy_n(xi, C, st + static_cast<int64_t>(P - 1) * C);
  }
}

void causal_conv_backward(float* dx, int64_t lddx, float* dw, float* dbias, const float* dout, const float* x,
                          int64_t ldx, const float* w, int B, int T, int C, int K) {
  const profile::Scope scope("causal_conv_backward");
  // Threads own channel ranges: dw and dbias need no reduction and the order is fixed.
#pragma omp parallel if (parallel_worth(static_cast <double>(B) * T * C * K))
  {
    int64_t c0, c1;
    split_range(C, omp_get_thread_num(), omp_get_num_threads(), c0, c1);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        float* d = dx + (static_cast<int64_t>(b) * T + t) * lddx;
        for (int64_t c = c0; c < c1; ++c) d[c] = 0.0f;
        for (int k = 0; k < K; ++k) {
          const int dst = t + (K - 1) - k;  // output position that read x[t] through tap k
          if (dst >= T) continue;
          const float* g = dout + (static_cast<int64_t>(b) * T + dst) * C;
          for (int64_t c = c0; c < c1; ++c) d[c] += w[c * K + k] * g[c];
        }
        const float* g = dout + (static_cast<int64_t>(b) * T + t) * C;
        for (int64_t c = c0; c < c1; ++c) dbias[c] += g[c];
        for (int k = 0; k < K; ++k) {
          const int src = t - (K - 1) + k;
          if (src < 0) continue;
          const float* xs = x + (static_cast<int64_t>(b) * T + src) * ldx;
          for (int64_t c = c0; c < c1; ++c) dw[c * K + k] += g[c] * xs[c];
        }
      }
  }
}

}  // namespace bmojo
