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
#include <cstddef>
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

// The recurrent step's attention (SPEC section 5): a block of queries of one sequence at positions
// t0 .. t0 + n - 1 reading that sequence's cached keys, with the same key sets and one softmax as above.
// Cached rows are [key | value] of all KV heads (2 Hk Dh floats, the value at column Hk Dh); a position p's
// row in a cache is at rows + (p - first) * ld. Query rows hold H Dh columns (head h at h Dh).
// The window and fading rows are fp32 (`window`, `fading`) or bf16 (`window16`, `fading16`: a state that
// stores its keys and values rounded to bf16; read back as fp32), one of the two for each.
struct StepKeys {
  const float* window = nullptr;  // rotated in-context rows for positions [window_first, t0 + n)
  const uint16_t* window16 = nullptr;
  int64_t window_first = 0;
  const float* fading = nullptr;  // rotated fading rows for positions [fading_first, t0 + n) (null: none)
  const uint16_t* fading16 = nullptr;
  int64_t fading_first = 0;
  int64_t ld = 0;  // row stride of the window, fading and memory rows
  // Eidetic entries (read with the unrotated query): rows of [raw key | value], ascending positions; fp32
  // (memory) or bf16 (memory16).
  const float* memory = nullptr;
  const uint16_t* memory16 = nullptr;
  const int64_t* memory_positions = nullptr;
  int memory_count = 0;
  // Entries read from a store, per KV head g: retrieved_count[g] rows of [raw key | value] of head g
  // (2 Dh floats each) at retrieved[g], with their positions (-1: an earlier run's, always visible).
  const float* const* retrieved = nullptr;
  const int64_t* const* retrieved_positions = nullptr;
  const int* retrieved_count = nullptr;
};

struct StepAttentionTask {
  const float* q = nullptr;  // rotated queries, n rows, stride ldq
  int64_t ldq = 0;
  const float* q_raw = nullptr;  // unrotated queries (needed when there are memory or retrieved entries)
  int64_t ldq_raw = 0;
  float* out = nullptr;  // n rows of H Dh, stride ldo
  int64_t ldo = 0;
  int64_t t0 = 0;
  int n = 0;
  StepKeys keys;
};

// Runs every task (independent sequences or blocks; a task's queries must not straddle a chunk of W
// positions when it has memory entries, since the memory changes at chunk boundaries). Uses d.H, d.Hk,
// d.Dh and d.window (0: full span, then no fading or memory).
void attention_step(const StepAttentionTask* tasks, size_t count, const AttentionDims& d);
void attention_step_reference(const StepAttentionTask* tasks, size_t count, const AttentionDims& d);

}  // namespace bmojo
