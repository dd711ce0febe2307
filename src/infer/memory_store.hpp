// Long-term eidetic memory "in storage" (SPEC section 6): one append-only file per B layer holding the
// entries evicted from the layer's bounded memory, written by a background thread so the token loop never
// waits on the disk, reopened by later runs, and searched by inner product of the entries' keys with a
// query (exact search for small stores, an HNSW index from hnswlib once a store is large).
//
// File: a header (magic, version, model fingerprint, KV heads, head size, checksum), then fixed-size
// records (magic, position, score, [raw key | value] of every KV head, checksum). On reopen every intact
// record is kept: a damaged one is skipped (the scan finds the next record that checks out), a torn tail
// is cut off, and the user is told what was dropped. The file is locked (flock) while open: a second writer
// is refused. A write that fails in the background (disk full) is raised by the next add() or flush().
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/layer_state.hpp"

namespace bmojo {

class MemoryStore : public LongTermStore {
 public:
  // Opens the store file at path (created, with its directory, if missing). Throws bmojo::Error when the
  // file belongs to another model or shape, or the directory is not writable. notice receives a line for
  // the user when a torn tail was dropped (empty otherwise).
  MemoryStore(const std::string& path, uint64_t fingerprint, int kv_heads, int head_dim, bool synchronous,
              std::string* notice = nullptr);
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // Queues an entry ([raw k | v] of all KV heads, 2 Hk Dh floats). Asynchronous stores return at once; the
  // writer commits it later. Synchronous stores write and commit before returning.
  void add(int64_t position, float score, const float* kv) override;
  // Waits until every queued entry is written and visible to retrieve(). Throws bmojo::Error if a write
  // failed since the store was opened (the entries concerned are not stored).
  void flush();
  // For each KV head g, up to r committed entries with the largest key . queries[g] (queries: Hk x Dh).
  std::vector<std::vector<RetrievedEntry>> retrieve(const float* queries, int r) const override;
  size_t size() const;  // committed entries
  size_t loaded_from_disk() const { return loaded_; }
  const std::string& path() const { return path_; }
  // Test hook: the writer sleeps this long before each batch (to show that add() does not wait for it).
  void set_write_delay_ms(int ms) { delay_ms_ = ms; }

  static constexpr size_t kAnnThreshold = 4096;
  static constexpr size_t kHeaderBytes =
      8 + 4 + 8 + 4 + 4 +
      8;  // bytes before the first record  // entries above which an HNSW index answers retrieve()

 private:
  struct Pending {
    int64_t position;
    float score;
    std::vector<float> kv;
  };
  void writer_loop();
  void write_and_commit(std::vector<Pending>& batch);
  void commit(const Pending& p, bool from_disk);
  size_t record_bytes() const;

  std::string path_;
  uint64_t fingerprint_;
  int kv_heads_, head_dim_;
  bool synchronous_;
  int fd_ = -1;
  size_t good_size_ = 0;  // bytes of the file that end on a record boundary
  size_t loaded_ = 0;
  int delay_ms_ = 0;

  // Committed entries, read by retrieve() under a shared lock.
  mutable std::shared_mutex index_mutex_;
  std::vector<int64_t> positions_;
  std::vector<uint8_t> earlier_run_;
  std::vector<float> kv_;  // (n, 2 Hk Dh)
  struct Ann;
  std::unique_ptr<Ann> ann_;

  // The writer's queue.
  std::mutex queue_mutex_;
  std::condition_variable queue_cv_, idle_cv_;
  std::deque<Pending> queue_;
  bool writing_ = false, stop_ = false;
  std::string error_;  // the first failed write, under queue_mutex_
  std::thread writer_;
};

}  // namespace bmojo
