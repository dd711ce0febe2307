#include "kernels/swiglu.hpp"

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

void swiglu_forward(float* act, const float* gate_up, int64_t N, int F) {
  const profile::Scope scope("swiglu_forward");
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * F))
  for (int64_t i = 0; i < N; ++i) {
    const float* g = gate_up + i * 2 * F;
    const float* u = g + F;
    float* a = act + i * F;
#pragma omp simd
    for (int c = 0; c < F; ++c) a[c] = siluf(g[c]) * u[c];
  }
}

void swiglu_backward(float* dgate_up, const float* dact, const float* gate_up, int64_t N, int F) {
  const profile::Scope scope("swiglu_backward");
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * F))
  for (int64_t i = 0; i < N; ++i) {
    const float* g = gate_up + i * 2 * F;
    const float* u = g + F;
    const float* da = dact + i * F;
    float* dg = dgate_up + i * 2 * F;
    float* du = dg + F;
#pragma omp simd
    for (int c = 0; c < F; ++c) {
      dg[c] = da[c] * u[c] * silu_grad(g[c]);
      du[c] = da[c] * siluf(g[c]);
    }
  }
}

}  // namespace bmojo
