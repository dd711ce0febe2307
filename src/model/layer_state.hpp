// The recurrent form's state (SPEC section 5), per layer and per sequence, and how a batched step names
// its sequences. Each layer kind's step lives beside its parallel form: attention_layer_step (A),
// mamba_layer_step (M), bmojo_layer_step (F, B); model_step.hpp walks the stack. Per layer and sequence
// the state is bounded:
//   A (window W): the last W rotated keys and values (full span: every key, a growing cache);
//   M: the conv inputs of the last d_conv - 1 tokens and the scan state (d_inner, N);
//   F: the SSM state, the last W keys/values and the last 2W fading keys/values;
//   B: as F, plus y_{t-1}, the current chunk's scores and raw keys/values, the eidetic memory (entries
//      with their rows), the chunk's query sum and what was read from the store for this chunk.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/attention.hpp"
#include "model/config.hpp"
#include "model/innovation.hpp"
#include "model/mamba_layer.hpp"

namespace bmojo {

// How a state stores the keys and values its attention reads every step (the window's, the fading rows and
// the eidetic memory's): fp32, exactly what the step computed, or bf16 (rounded to nearest even when
// stored; attention reads them back as fp32), which halves what a decode step reads of them and what a
// sequence's state takes in memory. The rest of a state (SSM state, the current chunk's rows, y_{t-1},
// entries read from a store) stays fp32.
enum class KvStorage { f32, bf16 };
const char* kv_storage_name(KvStorage k);
// "f32" or "bf16"; anything else throws bmojo::Error naming `what`.
KvStorage parse_kv_storage(const std::string& name, const std::string& what);

// Rows of the last `keep` positions (keep = 0: every position) in one contiguous buffer, so attention
// reads a position's row directly. Appending compacts to the last `keep` rows when the buffer is full;
// the buffer stays at keep + (largest block) rows, whatever the context length. Stored as fp32 (`data`) or
// bf16 (`data16`), one of the two.
struct PositionRows {
  int width = 0;
  int keep = 0;
  KvStorage storage = KvStorage::f32;
  int64_t first = 0;             // position of row 0
  int64_t count = 0;             // rows held
  std::vector<float> data;       // fp32 storage
  std::vector<uint16_t> data16;  // bf16 storage

  void reset(int row_width, int keep_rows, KvStorage kind = KvStorage::f32);
  // Appends n fp32 rows (row stride ld) for the positions first + count, ... (rounded to bf16 for bf16
  // storage).
  void append(const float* rows, int64_t ld, int64_t n);
  bool bf16() const { return storage == KvStorage::bf16; }
  const float* row(int64_t position) const { return data.data() + (position - first) * width; }
  const uint16_t* row16(int64_t position) const { return data16.data() + (position - first) * width; }
  // Rows [position, position + n) as fp32 (exact for either storage).
  std::vector<float> rows_f32(int64_t position, int64_t n) const;
  // Replaces the rows by n fp32 rows (dense) for positions [first_position, first_position + n), stored in
  // this storage (bf16 rounds).
  void assign(std::vector<float> rows, int64_t first_position, int64_t n);
  int64_t end() const { return first + count; }
  // The first position a future query can read (the last `keep` rows, or all).
  int64_t readable_first() const { return keep > 0 ? std::max(first, end() - keep) : first; }
  size_t element_bytes() const { return bf16() ? sizeof(uint16_t) : sizeof(float); }
  // Bytes of the rows a future query can read: the state proper. The buffer itself also has room for one
  // block of appended rows.
  size_t bytes() const { return static_cast<size_t>(end() - readable_first()) * width * element_bytes(); }
};

// An entry read back from long-term storage for one KV head.
struct RetrievedEntry {
  int64_t position = 0;   // in this run's positions; -1 for entries written by an earlier run
  std::vector<float> kv;  // [raw key | value] of one KV head (2 Dh)
};

// Long-term eidetic memory in storage (SPEC section 6) as a B layer's step sees it: evicted entries go in,
// the best matches of a query come out. infer/memory_store.hpp implements it with a file.
class LongTermStore {
 public:
  virtual ~LongTermStore() = default;
  // kv: [raw k | v] of all KV heads (2 Hk Dh floats).
  virtual void add(int64_t position, float score, const float* kv) = 0;
  // For each KV head g, up to r entries with the largest key . queries[g] (queries: Hk x Dh).
  virtual std::vector<std::vector<RetrievedEntry>> retrieve(const float* queries, int r) const = 0;
};

struct LayerState {
  char kind = 'A';
  MambaState ssm;                   // M, and F/B with an SSM branch
  PositionRows kv;                  // A, F, B: [rotated k | v] per position
  PositionRows kvf;                 // F, B with fading: [rotated kf | vf] per position
  std::vector<float> y_prev;        // B: SSM output of the previous token (D)
  std::vector<float> chunk_scores;  // B: innovation scores of the current chunk's positions (W)
  std::vector<float> chunk_kv;      // B: [raw k | v] of the current chunk's positions (W, 2 Hk Dh)
  EideticMemory memory;             // B: entries (position, score) with their [raw k | v] rows
  std::vector<float> chunk_qsum;    // B: sum of the current chunk's unrotated queries per KV head (Hk Dh)
  // B with a store: per KV head, the entries read at the last chunk boundary, [raw k | v] rows of 2 Dh.
  std::vector<std::vector<float>> retrieved_kv;
  std::vector<std::vector<int64_t>> retrieved_positions;
  // Not state: the store this layer writes evicted entries to and reads from (shared by copies), and the
  // entries read per KV head at each chunk boundary.
  std::shared_ptr<LongTermStore> store;
  int retrieve = 0;

  // The empty state of layer `kind` of this config (zeros before the first token), its keys and values
  // stored as `storage` says.
  void reset(char layer_kind, const ModelConfig& cfg, KvStorage storage = KvStorage::f32);
  size_t bytes() const;
  // Bytes of this state that the next one-token step reads (SPEC section 5): the in-context keys/values its
  // query can see, the fading rows in its span [t-2W+1, t-W] (W of the 2W kept), the eidetic memory's and
  // the retrieved rows, the SSM state (conv inputs and scan state), y_{t-1} and the chunk's query sum; the
  // chunk's scores and rows, read once per chunk of W tokens, count 1/W of their bytes. With the weights
  // this is what a decode step must bring in for one sequence (infer-bench's batching bound).
  double decode_read_bytes() const;
};

// Limits a state file or a caller must respect: positions stay far from int64 overflow; entries read from
// a store per KV head and chunk.
inline constexpr int64_t kMaxPosition = int64_t{1} << 60;
inline constexpr int kMaxRetrieve = 4096;
inline constexpr int64_t kMaxBlock = 1 << 16;  // tokens per prefill block (larger requests are split)

// One sequence's part of a batched step: its tokens are rows [row, row + n) of the step's row buffers
// (sequences one after another), the first at position `position`.
struct StepSequence {
  int64_t row = 0;
  int64_t n = 0;
  int64_t position = 0;
};

// Buffers a batched step reuses across layers and steps (not state).
struct StepScratch {
  std::vector<float> rope_cos, rope_sin;  // (rows, Dh / 2): the angles of each row's position
  std::vector<float> qkv, qk_raw, kvf, y, out, err, yshift, scores;
  MambaActivations mamba;
  std::vector<StepAttentionTask> tasks;
  std::vector<std::vector<int64_t>> memory_positions;  // per task: its memory's entry positions
  std::vector<std::vector<const float*>> retrieved;    // per task: per KV head rows
  std::vector<std::vector<const int64_t*>> retrieved_positions;
  std::vector<std::vector<int>> retrieved_count;
  std::vector<float> evicted_rows;
  std::vector<EideticEntry> evicted;
  std::vector<MambaState*> ssm_states;  // the step's sequences' SSM states (M, and the F/B branch)
};

}  // namespace bmojo
