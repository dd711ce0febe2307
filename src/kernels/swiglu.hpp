// SwiGLU activation: the MLP's input projection writes [gate | up] side by side, (N, 2F);
// act = silu(gate) * up, (N, F).
#pragma once
#include <cstdint>

#include "kernels/vector_math.hpp"

namespace bmojo {

// Declared simd so that loops over them vectorise (fast_exp instead of libm's scalar expf).
#pragma omp declare simd notinbranch
inline float sigmoidf(float x) {
  return 1.0f / (1.0f + fast_exp(-x));
}
#pragma omp declare simd notinbranch
inline float siluf(float x) {
  return x * sigmoidf(x);
}
// d silu(x) / dx
#pragma omp declare simd notinbranch
inline float silu_grad(float x) {
  const float s = sigmoidf(x);
  return s * (1.0f + x * (1.0f - s));
}

void swiglu_forward(float* act, const float* gate_up, int64_t N, int F);
// dgate_up (N, 2F) = from dact (N, F).
void swiglu_backward(float* dgate_up, const float* dact, const float* gate_up, int64_t N, int F);

}  // namespace bmojo
