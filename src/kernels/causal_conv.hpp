// Causal depthwise convolution over time with left zero padding (the Mamba conv):
// out[b,t,c] = bias[c] + sum_k w[c,k] * x[b, t-(K-1)+k, c].
#pragma once
#include <cstdint>

namespace bmojo {

// out (B,T,C) from x (B,T,C) with row stride ldx, w (C,K), bias (C).
void causal_conv_forward(float* out, const float* x, int64_t ldx, const float* w, const float* bias, int B,
                         int T, int C, int K);
// One new input for each of `count` sequences (a decode step over a batch): out row i (count, C) =
// causal_conv_forward at the position after sequence i's last K - 1 inputs, states[i] (K - 1, C), oldest
// first, given x row i (row stride ldx); states[i] then holds the last K - 1 inputs with row i appended.
void causal_conv_step(float* out, const float* x, int64_t ldx, const float* w, const float* bias,
                      float* const* states, int64_t count, int C, int K);
// dx (B,T,C) (row stride lddx) =, dw (C,K) +=, dbias (C) +=.
void causal_conv_backward(float* dx, int64_t lddx, float* dw, float* dbias, const float* dout, const float* x,
                          int64_t ldx, const float* w, int B, int T, int C, int K);
// Plain serial loops over the (C, K) weights, each tap read at a stride of K: the references the two above
// are tested against (the same sums in the same order, so bit for bit).
void causal_conv_forward_reference(float* out, const float* x, int64_t ldx, const float* w, const float* bias,
                                   int B, int T, int C, int K);
void causal_conv_backward_reference(float* dx, int64_t lddx, float* dw, float* dbias, const float* dout,
                                    const float* x, int64_t ldx, const float* w, int B, int T, int C, int K);

}  // namespace bmojo
