// Linear map without bias: y = x W, W stored (in, out) row-major. The fast path is one BLAS call;
// the reference is the plain triple loop it is tested against.
#pragma once
#include <cstdint>

namespace bmojo {

// out (N, out_dim) (row stride ldo) = inp (N, in_dim) (row stride ldi) W (in_dim, out_dim) (row stride ldw);
// beta = 1 accumulates into out.
void linear_forward(float* out, int ldo, const float* inp, int ldi, const float* weight, int ldw, int64_t N,
                    int in_dim, int out_dim, float beta = 0.0f);
// dinp (N, in_dim) = dout W^T (+= when accumulate_dinp), dweight += inp^T dout. dinp may be null.
void linear_backward(float* dinp, int lddi, float* dweight, int ldw, const float* dout, int ldo,
                     const float* inp, int ldi, const float* weight, int64_t N, int in_dim, int out_dim,
                     bool accumulate_dinp);

void linear_forward_reference(float* out, const float* inp, const float* weight, int64_t N, int in_dim,
                              int out_dim);
void linear_backward_reference(float* dinp, float* dweight, const float* dout, const float* inp,
                               const float* weight, int64_t N, int in_dim, int out_dim);

}  // namespace bmojo
