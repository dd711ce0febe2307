#include "kernels/linear.hpp"

#include "core/blas.hpp"
#include "core/profile.hpp"

namespace bmojo {

void linear_forward(float* out, int ldo, const float* inp, int ldi, const float* weight, int ldw, int64_t N,
                    int in_dim, int out_dim, float beta) {
  const profile::Scope scope("linear_forward");
  matmul(false, false, static_cast<int>(N), out_dim, in_dim, 1.0f, inp, ldi, weight, ldw, beta, out, ldo);
}

void linear_backward(float* dinp, int lddi, float* dweight, int ldw, const float* dout, int ldo,
                     const float* inp, int ldi, const float* weight, int64_t N, int in_dim, int out_dim,
                     bool accumulate_dinp) {
  const profile::Scope scope("linear_backward");
  // Both products read dout: with bf16 products it is rounded once.
  const Bf16OperandReuse reuse;
  if (dinp != nullptr) {
    matmul(false, true, static_cast<int>(N), in_dim, out_dim, 1.0f, dout, ldo, weight, ldw,
           accumulate_dinp ? 1.0f : 0.0f, dinp, lddi);
  }
  matmul(true, false, in_dim, out_dim, static_cast<int>(N), 1.0f, inp, ldi, dout, ldo, 1.0f, dweight, ldw);
}

void linear_forward_reference(float* out, const float* inp, const float* weight, int64_t N, int in_dim,
                              int out_dim) {
  for (int64_t i = 0; i < N; ++i)
    for (int o = 0; o < out_dim; ++o) {
      double acc = 0.0;
      for (int c = 0; c < in_dim; ++c)
        acc += static_cast<double>(inp[i * in_dim + c]) * weight[c * out_dim + o];
      out[i * out_dim + o] = static_cast<float>(acc);
    }
}

void linear_backward_reference(float* dinp, float* dweight, const float* dout, const float* inp,
                               const float* weight, int64_t N, int in_dim, int out_dim) {
  for (int64_t i = 0; i < N; ++i)
    for (int c = 0; c < in_dim; ++c) {
      double acc = 0.0;
      for (int o = 0; o < out_dim; ++o)
        acc += static_cast<double>(dout[i * out_dim + o]) * weight[c * out_dim + o];
      dinp[i * in_dim + c] = static_cast<float>(acc);
    }
  for (int c = 0; c < in_dim; ++c)
    for (int o = 0; o < out_dim; ++o) {
      double acc = 0.0;
      for (int64_t i = 0; i < N; ++i) acc += static_cast<double>(inp[i * in_dim + c]) * dout[i * out_dim + o];
      dweight[c * out_dim + o] += static_cast<float>(acc);
    }
}

}  // namespace bmojo
