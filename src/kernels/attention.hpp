// Causal softmax attention over a sliding window (window 0 = full span), with grouped KV heads.
// Layout: rows are (b, t) pairs, b-major; query head h occupies columns [h*Dh, (h+1)*Dh) of a q row and
// reads KV head h / (H / Hk), whose key and value occupy columns [g*Dh, (g+1)*Dh) of k and v rows.
// Query t attends keys j in [t-W+1, t] (all j <= t when W = 0), scale Dh^-0.5, one softmax.
//
// Two versions with one signature: the reference (the definition, plain loops) and the fast one (query
// blocks of 64 rows, scores and products through BLAS, never more than a block row of scores in memory,
// O(T * W) work when windowed). The backward recomputes scores from the saved log-sum-exp.
#pragma once
#include <cstdint>

namespace bmojo {

struct AttentionDims {
  int B = 1, T = 1;    // batch, sequence length
  int H = 1, Hk = 1;   // query heads, KV heads (H % Hk == 0)
  int Dh = 1;          // head dim
  int window = 0;      // W; 0 = full causal span
};

// out (B*T rows, stride ldo), lse (B, H, T) from q (stride ldq), k, v (stride ldkv).
void attention_forward(float* out, int64_t ldo, float* lse, const float* q, int64_t ldq, const float* k,
                       const float* v, int64_t ldkv, const AttentionDims& d);
// dq (stride ldq), dk, dv (stride ldkv) are written (not accumulated); dout has stride ldo.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, int64_t ldo,
                        const float* lse, const float* q, int64_t ldq, const float* k, const float* v,
                        int64_t ldkv, const AttentionDims& d);

void attention_forward_reference(float* out, int64_t ldo, float* lse, const float* q, int64_t ldq,
                                 const float* k, const float* v, int64_t ldkv, const AttentionDims& d);
void attention_backward_reference(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                  int64_t ldo, const float* lse, const float* q, int64_t ldq, const float* k,
                                  const float* v, int64_t ldkv, const AttentionDims& d);

}  // namespace bmojo
