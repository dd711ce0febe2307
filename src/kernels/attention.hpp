// Causal softmax attention for A, F and B layers (SPEC sections 3-4): one softmax over up to three key sets.
//   in-context keys k_j, values v_j, j in [t-W+1, t]           (all j <= t when W = 0)
//   fading keys kf_j, values vf_j,   j in [t-2W+1, t-W]         (F and B; needs W >= 1)
//   eidetic entries (p, k_raw_p, v_p) of the memory visible to t (B only), scored with the unrotated query
// Rows are (b, t) pairs, b-major. Query head h occupies columns [h*Dh, (h+1)*Dh) of a q row and reads KV
// head g = h / (H / Hk), at columns [g*Dh, (g+1)*Dh) of k, v, kf, vf and k_raw rows. Scale Dh^-0.5.
//
// Two versions with one signature: the reference (the definition, plain loops) and the fast one (query
// blocks of at most 64 rows that never straddle a chunk of W positions, scores and products through BLAS,
// O(T (2W + m)) work when windowed). The backward recomputes scores from the saved log-sum-exp.
#pragma once
#include <cstdint>
#include <vector>

namespace bmojo {

struct AttentionDims {
  int B = 1, T = 1;   // batch, sequence length
  int H = 1, Hk = 1;  // query heads, KV heads (H % Hk == 0)
  int Dh = 1;         // head dim
  int window = 0;     // W; 0 = full causal span (then no fading or eidetic keys)
};

// Which eidetic entries each chunk of W queries may read: positions[b][c] lists (ascending) the memory
// as it stands after chunks 0..c-1 were promoted. Query t in chunk c reads those p with p <= t - W.
struct EideticPlan {
  std::vector<std::vector<std::vector<int32_t>>> positions;  // [b][chunk] -> entry positions
  bool empty() const;
};

struct AttentionInputs {
  const float* q = nullptr;  // rotated queries, row stride ldq
  int64_t ldq = 0;
  const float* k = nullptr;  // rotated in-context keys, row stride ldkv
  const float* v = nullptr;  // values, row stride ldkv
  int64_t ldkv = 0;
  const float* kf = nullptr;  // rotated fading keys (null: no fading stream), row stride ldf
  const float* vf = nullptr;  // fading values
  int64_t ldf = 0;
  const float* q_raw = nullptr;  // unrotated queries for eidetic scores, row stride ldq_raw
  int64_t ldq_raw = 0;
  const float* k_raw = nullptr;  // unrotated keys: the eidetic entries' keys, row stride ldk_raw
  int64_t ldk_raw = 0;
  const EideticPlan* eidetic = nullptr;  // null or empty: no eidetic entries
};

// Gradients, laid out like the inputs. dq, dk, dv, dkf, dvf, dq_raw, dk_raw are written (not accumulated);
// the eidetic values' gradient lands in dv (values carry no rotation). Unused ones may be null.
struct AttentionGrads {
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  float* dkf = nullptr;
  float* dvf = nullptr;
  float* dq_raw = nullptr;
  float* dk_raw = nullptr;
};

// out (B*T rows, stride ldo), lse (B, H, T).
void attention_forward(float* out, int64_t ldo, float* lse, const AttentionInputs& in,
                       const AttentionDims& d);
void attention_backward(const AttentionGrads& g, const float* dout, const float* out, int64_t ldo,
                        const float* lse, const AttentionInputs& in, const AttentionDims& d);

void attention_forward_reference(float* out, int64_t ldo, float* lse, const AttentionInputs& in,
                                 const AttentionDims& d);
void attention_backward_reference(const AttentionGrads& g, const float* dout, const float* out, int64_t ldo,
                                  const float* lse, const AttentionInputs& in, const AttentionDims& d);

}  // namespace bmojo
