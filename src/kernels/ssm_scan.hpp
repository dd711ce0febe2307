// Mamba-1 selective scan (SPEC section 2):
//   s_t[c,n] = exp(dt_t[c] A[c,n]) s_{t-1}[c,n] + dt_t[c] B_t[n] x_t[c],   s_{-1} = 0
//   y_t[c]   = sum_n C_t[n] s_t[c,n] + Dskip[c] x_t[c]
// The reference is the sequential definition keeping every state; the fast version runs channel blocks in
// parallel, keeps the state in registers-sized tiles and, in the backward pass, recomputes the states of
// one channel block at a time instead of storing (B, T, C, N) of them.
#pragma once
#include <cstdint>

namespace bmojo {

struct ScanDims {
  int B = 1, T = 1;
  int C = 1;  // channels (d_inner)
  int N = 1;  // state size (d_state)
};

// x, dt, y: (B, T, C) contiguous. Bm, Cm: (B, T, N) with row stride ldbc. A: (C, N). Dskip: (C).
// final_state (B, C, N) may be null; initial_state (B, C, N) may be null (zeros) and may alias final_state
// (streaming inference carries the state from one block of tokens to the next that way).
void selective_scan_forward(float* y, const float* x, const float* dt, const float* A, const float* Bm,
                            const float* Cm, int64_t ldbc, const float* Dskip, const ScanDims& d,
                            float* final_state = nullptr, const float* initial_state = nullptr);
// One token for each of `count` sequences (a decode step over a batch): row i of x, dt and y ((count, C)
// contiguous) and of Bm, Cm (row stride ldbc) is sequence i's, whose state states[i] (C, N) advances in
// place. The arithmetic of selective_scan_forward with T = 1 and the state carried, in one parallel region
// over every sequence's channels instead of one call per sequence.
void selective_scan_step(float* y, const float* x, const float* dt, const float* A, const float* Bm,
                         const float* Cm, int64_t ldbc, const float* Dskip, int C, int N,
                         float* const* states, int64_t count);
// dx, ddt (B, T, C) and dBm, dCm (row stride ldbc) are written; dA (C, N) and dDskip (C) accumulate.
void selective_scan_backward(float* dx, float* ddt, float* dA, float* dBm, float* dCm, float* dDskip,
                             const float* dy, const float* x, const float* dt, const float* A,
                             const float* Bm, const float* Cm, int64_t ldbc, const float* Dskip,
                             const ScanDims& d);

void selective_scan_forward_reference(float* y, const float* x, const float* dt, const float* A,
                                      const float* Bm, const float* Cm, int64_t ldbc, const float* Dskip,
                                      const ScanDims& d);
void selective_scan_backward_reference(float* dx, float* ddt, float* dA, float* dBm, float* dCm,
                                       float* dDskip, const float* dy, const float* x, const float* dt,
                                       const float* A, const float* Bm, const float* Cm, int64_t ldbc,
                                       const float* Dskip, const ScanDims& d);

}  // namespace bmojo
