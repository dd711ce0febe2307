// Streaming inference (SPEC section 5): thin drivers over the stack's recurrent step (model/model_step.hpp,
// each layer's step beside its parallel form). A Session feeds one sequence, a block of tokens at a time;
// a BatchSession advances many sequences together, each at its own position with its own state, joining
// and leaving between steps. Both are copyable per sequence (continue one prompt many ways), and a
// sequence's state is saved to and restored from a state file (infer/state_file.hpp).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "infer/memory_store.hpp"
#include "model/layer_state.hpp"
#include "model/model.hpp"
#include "model/model_step.hpp"

namespace bmojo {

using SessionState = SequenceState;

class Session {
 public:
  // The model must outlive the session and keep its weights while the session is used. storage: how the
  // state keeps its attention keys and values (bf16 halves them; a loaded state file keeps the file's).
  explicit Session(const Model& model, KvStorage storage = KvStorage::f32);

  void reset();
  // Feeds n tokens (checked against the vocabulary), in blocks of at most `block` tokens (0: one block).
  // logits: (n, V) rows for every token when all_logits, else (V) for the last token only; may be null.
  void feed(const int32_t* tokens, int64_t n, float* logits, bool all_logits = false, int64_t block = 256);
  int64_t position() const { return state_.position; }
  const SequenceState& state() const { return state_; }
  // Bytes of the state proper (what save() writes, without its header): bounded for every layer but
  // full-span attention.
  size_t state_bytes() const { return state_.bytes(); }

  // Long-term memory in storage (SPEC section 6): a store per B layer under dir (layer<l>.bmstore) receives
  // the entries evicted from the bounded memory; at each chunk boundary the r entries per KV head whose
  // keys best match the finished chunk's mean unrotated query are read by the next chunk. synchronous
  // writes in the token loop (reproducible); otherwise a background thread writes. Returns notices for the
  // user (torn tails dropped). Copies of the session share the stores.
  std::vector<std::string> attach_store(const std::string& dir, int retrieve, bool synchronous);
  // Waits until every store has committed what it was given.
  void flush_stores();
  const std::vector<std::shared_ptr<MemoryStore>>& stores() const { return stores_; }

  // State file (safetensors), written atomically, tagged with the model's fingerprint and a checksum.
  void save(const std::string& path) const;
  // Throws bmojo::Error if the file is not a state file, is truncated or corrupted, was saved by another
  // model (config or weights), or any field does not fit the model; the session is then unchanged.
  void load(const std::string& path);

 private:
  void attach_to_layers();

  const Model* model_;
  KvStorage storage_;
  std::vector<std::shared_ptr<MemoryStore>> stores_;  // per layer; null where none
  int retrieve_ = 0;
  SequenceState state_;
  int64_t checked_block_ = 0;  // largest block whose memory estimate was checked
  StackScratch scratch_;
};

// Many sequences decoded (or prefilled) together: one step reads the weights once for all of them.
class BatchSession {
 public:
  // storage: how a sequence that joins empty keeps its attention keys and values; a joining state keeps
  // its own.
  explicit BatchSession(const Model& model, KvStorage storage = KvStorage::f32);
  KvStorage storage() const { return storage_; }

  // Adds a sequence, empty or continuing a copy of `state` (e.g. a Session's or a loaded file's); returns
  // its id (never reused).
  int64_t join();
  int64_t join(const SequenceState& state);
  // Adds a sequence from a state file (checked as Session::load does).
  int64_t join_from_file(const std::string& path);
  void leave(int64_t id);
  bool contains(int64_t id) const { return sequences_.count(id) > 0; }
  size_t size() const { return sequences_.size(); }
  const SequenceState& state(int64_t id) const;
  void save(int64_t id, const std::string& path) const;

  struct Input {
    int64_t id = 0;
    const int32_t* tokens = nullptr;
    int64_t n = 0;  // 1 .. kMaxBlock
  };
  // Advances each listed sequence (each at most once) by its tokens, all in one step. logits, when not
  // null: (inputs.size(), V), row i for input i's last token.
  void step(const std::vector<Input>& inputs, float* logits);

 private:
  SequenceState& find(int64_t id);

  const Model* model_;
  KvStorage storage_;
  std::map<int64_t, SequenceState> sequences_;
  int64_t next_id_ = 0;
  int64_t checked_rows_ = 0;
  bool checked_packed_ = false;
  StackScratch scratch_;
  std::vector<SequenceState*> step_states_;
  std::vector<int64_t> step_counts_;
  std::vector<int32_t> step_tokens_;
};

}  // namespace bmojo
