// The server's prefix-state cache. A recurrent state cannot be rolled back, but B'MOJO's is bounded (the
// window, the fading and eidetic memories, the SSM state: a few MB per sequence), so the server keeps
// copies of it: while a prompt is prefilled, the state at every `every`-th token is kept, keyed by a hash
// of the tokens before it (and checked against those tokens, so a hash collision is a miss, not a wrong
// answer). A new prompt resumes from its longest cached prefix and prefills only the rest. Prefill chunks
// are aligned to absolute positions (multiples of the prefill block, which `every` is a multiple of), so
// a resumed prompt runs exactly the chunks the cold one ran: the result is identical, bit for bit.
// Bounded in bytes, least recently used out first; optionally kept in a directory across restarts (one
// state file per entry, with its tokens).
#pragma once
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "model/model.hpp"
#include "model/model_step.hpp"

namespace bmojo {

struct PrefixCacheStats {
  size_t entries = 0, bytes = 0, capacity = 0;
  uint64_t hits = 0, misses = 0, inserted = 0, evicted = 0;
};

class PrefixCache {
 public:
  // capacity_bytes 0 disables the cache.
  PrefixCache(size_t capacity_bytes, int64_t every);

  int64_t every() const { return every_; }
  bool enabled() const { return capacity_ > 0; }
  // Whether the state after `length` tokens is one the cache keeps (a multiple of `every`).
  bool keeps(int64_t length) const { return enabled() && length > 0 && length % every_ == 0; }

  // The state after the longest cached prefix of tokens[0, limit), or nothing.
  std::optional<SequenceState> lookup(const std::vector<int32_t>& tokens, int64_t limit);
  // Keeps a copy of the state after tokens[0, length) (length = state.position), evicting the least
  // recently used entries to stay within capacity; a state larger than the whole capacity is not kept.
  void insert(const int32_t* tokens, int64_t length, const SequenceState& state);
  PrefixCacheStats stats() const;

  // Writes every entry to dir (created) as <key>.state, atomically, and removes the files of entries that
  // were evicted since; returns the number written.
  size_t save(const std::string& dir, const Model& model);
  // Reads the <key>.state files in dir (a missing dir is empty); a file that is not a valid state of this
  // model with its tokens is reported in the returned notices and left alone.
  std::vector<std::string> load(const std::string& dir, const Model& model,
                                KvStorage storage = KvStorage::f32);

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    SequenceState state;
    size_t bytes = 0;
    std::list<uint64_t>::iterator lru;
  };
  static uint64_t key_of(const int32_t* tokens, int64_t length);
  void insert_locked(uint64_t key, std::vector<int32_t> tokens, SequenceState state);

  size_t capacity_;
  int64_t every_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // most recently used first
  size_t bytes_ = 0;
  PrefixCacheStats counts_;
  std::vector<uint64_t> evicted_keys_;    // whose files save() removes
  std::unordered_set<uint64_t> on_disk_;  // entries known to be in the directory (loaded or saved)
};

}  // namespace bmojo
