// RMSNorm: out = x / sqrt(mean(x^2) + eps) * weight.
#pragma once
#include <cstdint>

namespace bmojo {

// out (N, D), rstd (N) from inp (N, D), weight (D).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int D,
                     float eps);
// dinp (N, D) +=, dweight (D) +=, given dout (N, D) and the forward's inp and rstd.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int D);

}  // namespace bmojo
