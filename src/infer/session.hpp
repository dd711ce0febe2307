// Streaming inference (SPEC section 5): the recurrent form of every layer, fed a block of tokens at a
// time. A block of one token is the decode step; larger blocks are the chunked prefill, which runs the
// projections as matrix products over the block and leaves exactly the state the one-token steps would
// have left (it is the same code). Per layer and sequence the state is bounded:
//   A (window W): the last W rotated keys and values (full span: every key, a growing cache);
//   M: the conv inputs of the last d_conv - 1 tokens and the scan state (d_inner, N);
//   F: the SSM state, the last W keys/values and the last 2W fading keys/values;
//   B: as F, plus y_{t-1}, the current chunk's scores and raw keys/values, and the eidetic memory.
// A Session is copyable (continue one prompt many ways) and its state can be saved to a file and loaded.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "infer/memory_store.hpp"
#include "model/innovation.hpp"
#include "model/mamba_layer.hpp"
#include "model/model.hpp"

namespace bmojo {

// Rows of the last `keep` positions (keep = 0: every position) in one contiguous buffer, so attention
// reads a position's row directly. Appending compacts to the last `keep` rows when the buffer is full;
// the buffer stays at keep + (largest block) rows, whatever the context length.
struct PositionRows {
  int width = 0;
  int keep = 0;
  int64_t first = 0;  // position of row 0
  int64_t count = 0;  // rows held
  std::vector<float> data;

  void reset(int row_width, int keep_rows);
  // Appends n rows (row stride ld) for the positions first + count, ...
  void append(const float* rows, int64_t ld, int64_t n);
  const float* row(int64_t position) const { return data.data() + (position - first) * width; }
  int64_t end() const { return first + count; }
  // Bytes of the rows a future query can read (the last `keep`, or all): the state proper. The buffer
  // itself also has room for one block of appended rows.
  size_t bytes() const {
    return static_cast<size_t>(keep > 0 ? std::min<int64_t>(count, keep) : count) * width * sizeof(float);
  }
};

struct LayerState {
  char kind = 'A';
  MambaState ssm;                   // M, and F/B with an SSM branch
  PositionRows kv;                  // A, F, B: [rotated k | v] per position
  PositionRows kvf;                 // F, B with fading: [rotated kf | vf] per position
  std::vector<float> y_prev;        // B: SSM output of the previous token (D)
  std::vector<float> chunk_scores;  // B: innovation scores of the current chunk's positions (W)
  std::vector<float> chunk_kv;      // B: [raw k | v] of the current chunk's positions (W, 2 Hk Dh)
  EideticMemory memory;             // B: entries (position, score), ascending by position
  std::vector<float> memory_kv;     // B: [raw k | v] of each entry, in the same order
  std::vector<float> chunk_qsum;    // B: sum of the current chunk's unrotated queries per KV head (Hk Dh)
  std::vector<std::vector<RetrievedEntry>> retrieved;  // B with a store: per KV head, read in this chunk
  size_t bytes() const;
};

// Limits a state file or a caller must respect: positions stay far from int64 overflow; entries read from
// a store per KV head and chunk.
inline constexpr int64_t kMaxPosition = int64_t{1} << 60;
inline constexpr int kMaxRetrieve = 4096;
inline constexpr int64_t kMaxBlock = 1 << 16;  // tokens per prefill block (larger requests are split)

struct SessionState {
  int64_t position = 0;  // tokens consumed
  std::vector<LayerState> layers;
};

class Session {
 public:
  // The model must outlive the session and keep its weights while the session is used.
  explicit Session(const Model& model);

  void reset();
  // Feeds n tokens (checked against the vocabulary), in blocks of at most `block` tokens (0: one block).
  // logits: (n, V) rows for every token when all_logits, else (V) for the last token only; may be null.
  void feed(const int32_t* tokens, int64_t n, float* logits, bool all_logits = false, int64_t block = 256);
  int64_t position() const { return state_.position; }
  const SessionState& state() const { return state_; }
  // Bytes of the state proper (what save() writes, without its header): bounded for every layer but
  // full-span attention.
  size_t state_bytes() const;

  // Long-term memory in storage (SPEC section 6): a store per B layer under dir (layer<l>.bmstore) receives
  // the entries evicted from the bounded memory; at each chunk boundary the r entries per KV head whose
  // keys best match the finished chunk's mean unrotated query are read by the next chunk. synchronous
  // writes in the token loop (reproducible); otherwise a background thread writes. Returns notices for the
  // user (torn tails dropped). Copies of the session share the stores.
  std::vector<std::string> attach_store(const std::string& dir, int retrieve, bool synchronous);
  // Waits until every store has committed what it was given.
  void flush_stores();
  const std::vector<std::shared_ptr<MemoryStore>>& stores() const { return stores_; }

  // Binary state file, written atomically, tagged with the model's fingerprint and a checksum.
  void save(const std::string& path) const;
  // Throws bmojo::Error if the file is not a state file, is truncated or corrupted, or was saved by
  // another model (config or weights).
  void load(const std::string& path);

 private:
  void forward_block(const int32_t* tokens, int64_t n, float* logits, bool all_logits);
  void attention_mixer(size_t l, LayerState& st, int64_t n);
  void attend(const LayerState& st, int64_t t0, int64_t t1, const float* q, const float* q_raw,
              float* out) const;
  void promote_chunk(LayerState& st, int64_t chunk_start, MemoryStore* store) const;

  const Model* model_;
  uint64_t fingerprint_ = 0;
  std::vector<std::shared_ptr<MemoryStore>> stores_;  // per layer; null where none
  int retrieve_ = 0;
  SessionState state_;
  // Block scratch, not part of the state.
  int64_t pos0_ = 0;
  int64_t checked_block_ = 0;  // largest block whose memory estimate was checked
  std::vector<float> residual_, xn_, qkv_, qk_raw_, kvf_, y_, out_, rope_cos_, rope_sin_, scores_, err_,
      yshift_, gate_up_, act_, final_;
  MambaActivations mamba_act_;
};

}  // namespace bmojo
