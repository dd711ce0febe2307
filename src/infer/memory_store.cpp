#include "infer/memory_store.hpp"

#include <fcntl.h>
// hnswlib 0.6.2's SSE path prefetches one element past a neighbour list (a harmless read that
// AddressSanitizer reports as a heap overflow); sanitizer builds use its plain path.
#if defined(__SANITIZE_ADDRESS__)
#define NO_MANUAL_VECTORIZATION
#endif
#include <hnswlib/hnswlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <queue>

#include "core/error.hpp"
#include "core/file_io.hpp"

namespace bmojo {

namespace {

constexpr char kStoreMagic[8] = {'B', 'M', 'J', 'S', 'T', 'O', 'R', 'E'};
constexpr uint32_t kStoreVersion = 1;
constexpr uint32_t kRecordMagic = 0x52454331;  // "REC1"

}  // namespace

// One HNSW graph per KV head over the entries' keys (inner-product space).
struct MemoryStore::Ann {
  std::vector<std::unique_ptr<hnswlib::InnerProductSpace>> spaces;
  std::vector<std::unique_ptr<hnswlib::HierarchicalNSW<float>>> graphs;
  size_t capacity = 0;
};

MemoryStore::MemoryStore(const std::string& path, uint64_t fingerprint, int kv_heads, int head_dim,
                         bool synchronous, std::string* notice)
    : path_(path),
      fingerprint_(fingerprint),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      synchronous_(synchronous) {
  if (notice) notice->clear();
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  check(!ec, "memory store: cannot create directory '" + dir.string() + "': " + ec.message());
  require_replaceable(path, "memory store");
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  check(fd_ >= 0, "memory store: cannot open '" + path + "' for writing: " + std::strerror(errno));
  // One writer per store: a second process (or a second store object) appending to the same file would
  // interleave records. The lock goes with the descriptor, so a killed writer never leaves it held.
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail("memory store '" + path + "' is in use by another writer (it is locked); one process at a time " +
           "may write a store");
    fail("memory store '" + path + "': cannot lock: " + std::strerror(err));
  }
  std::string bytes;
  try {
    bytes = read_file(path, "memory store");
  } catch (...) {
    ::close(fd_);
    throw;
  }
  // The header: written once when the file is new.
  char header[kHeaderBytes];
  {
    size_t at = 0;
    const auto put = [&](const void* p, size_t n) {
      std::memcpy(header + at, p, n);
      at += n;
    };
    put(kStoreMagic, 8);
    put(&kStoreVersion, 4);
    put(&fingerprint_, 8);
    put(&kv_heads_, 4);
    put(&head_dim_, 4);
    const uint64_t sum = fnv1a64(header, at);
    put(&sum, 8);
  }
  const auto fail_closed = [&](const std::string& why) {
    ::close(fd_);
    fd_ = -1;
    fail(why);
  };
  if (bytes.size() < kHeaderBytes) {
    if (!bytes.empty() && std::memcmp(bytes.data(), kStoreMagic, std::min<size_t>(8, bytes.size())) != 0)
      fail_closed("memory store '" + path + "' is not a bmojo memory store");
    // New (or torn before its header was complete): start it.
    if (::ftruncate(fd_, 0) != 0) fail_closed("memory store '" + path + "': cannot truncate");
    ::lseek(fd_, 0, SEEK_SET);
    try {
      write_fully(fd_, header, kHeaderBytes, "memory store", path);
    } catch (...) {
      ::close(fd_);
      fd_ = -1;
      throw;
    }
    good_size_ = kHeaderBytes;
  } else {
    if (std::memcmp(bytes.data(), kStoreMagic, 8) != 0)
      fail_closed("memory store '" + path + "' is not a bmojo memory store");
    uint64_t sum = 0;
    std::memcpy(&sum, bytes.data() + kHeaderBytes - 8, 8);
    if (fnv1a64(bytes.data(), kHeaderBytes - 8) != sum)
      fail_closed("memory store '" + path + "' has a corrupted header");
    if (std::memcmp(bytes.data(), header, kHeaderBytes) != 0)
      fail_closed("memory store '" + path +
                  "' was written by a different model (config, weights or shapes differ)");
    // Records: every intact one is kept. A damaged record costs itself alone: the scan moves on byte by
    // byte to the next place where a whole record checks out. Damage after the last intact record (a torn
    // tail) is cut off so appends start on a record boundary.
    const size_t rec = record_bytes();
    const size_t floats = static_cast<size_t>(2) * kv_heads_ * head_dim_;
    size_t at = kHeaderBytes, good_end = kHeaderBytes, damaged = 0;
    bool in_damage = false;
    while (at + rec <= bytes.size()) {
      const char* r = bytes.data() + at;
      uint32_t magic = 0;
      uint64_t rsum = 0;
      std::memcpy(&magic, r, 4);
      std::memcpy(&rsum, r + rec - 8, 8);
      Pending p;
      bool ok = magic == kRecordMagic && fnv1a64(r, rec - 8) == rsum;
      if (ok) {
        std::memcpy(&p.position, r + 4, 8);
        std::memcpy(&p.score, r + 12, 4);
        p.kv.resize(floats);
        std::memcpy(p.kv.data(), r + 16, floats * sizeof(float));
        // A record with a valid checksum can still be hostile: only finite keys and values of the past.
        ok = p.position >= 0 && std::isfinite(p.score);
        for (size_t i = 0; ok && i < floats; ++i) ok = std::isfinite(p.kv[i]);
      }
      if (!ok) {
        if (!in_damage) ++damaged;
        in_damage = true;
        ++at;
        continue;
      }
      in_damage = false;
      commit(p, true);
      at += rec;
      good_end = at;
    }
    loaded_ = positions_.size();
    const size_t tail = bytes.size() - good_end;
    const size_t skipped_bytes =
        good_end - kHeaderBytes - loaded_ * rec;  // damage before the last intact record
    if (tail > 0) {
      if (::ftruncate(fd_, static_cast<off_t>(good_end)) != 0)
        fail_closed("memory store '" + path + "': cannot truncate");
    }
    if ((tail > 0 || skipped_bytes > 0) && notice) {
      *notice = "memory store '" + path + "': kept " + std::to_string(loaded_) + " entries";
      if (skipped_bytes > 0)
        *notice += "; skipped " + std::to_string(damaged - (in_damage ? 1 : 0)) + " damaged region(s) of " +
                   std::to_string(skipped_bytes) + " bytes inside the file";
      if (tail > 0) *notice += "; dropped " + std::to_string(tail) + " bytes of a torn or corrupted tail";
    }
    ::lseek(fd_, static_cast<off_t>(good_end), SEEK_SET);
    good_size_ = good_end;
  }
  if (!synchronous_) writer_ = std::thread([this] { writer_loop(); });
}

MemoryStore::~MemoryStore() {
  if (writer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      stop_ = true;
    }
    queue_cv_.notify_all();
    writer_.join();
  }
  if (fd_ >= 0) {
    ::fdatasync(fd_);
    ::close(fd_);
  }
}

size_t MemoryStore::record_bytes() const {
  return 4 + 8 + 4 + sizeof(float) * 2 * kv_heads_ * head_dim_ + 8;
}

void MemoryStore::add(int64_t position, float score, const float* kv) {
  Pending p{position, score, std::vector<float>(kv, kv + static_cast<size_t>(2) * kv_heads_ * head_dim_)};
  if (synchronous_) {
    std::vector<Pending> batch;
    batch.push_back(std::move(p));
    write_and_commit(batch);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    if (!error_.empty()) fail(error_ + " (entries evicted since were not stored)");
    queue_.push_back(std::move(p));
  }
  queue_cv_.notify_one();
}

void MemoryStore::flush() {
  if (synchronous_) return;
  std::unique_lock<std::mutex> lock(queue_mutex_);
  idle_cv_.wait(lock, [&] { return queue_.empty() && !writing_; });
  if (!error_.empty()) fail(error_ + " (entries evicted since were not stored)");
}

void MemoryStore::writer_loop() {
  std::unique_lock<std::mutex> lock(queue_mutex_);
  for (;;) {
    queue_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty() && stop_) return;
    std::vector<Pending> batch(std::make_move_iterator(queue_.begin()),
                               std::make_move_iterator(queue_.end()));
    queue_.clear();
    writing_ = true;
    lock.unlock();
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    try {
      write_and_commit(batch);
    } catch (const std::exception& e) {
      // A full disk must not take the token loop down, but it must not pass unnoticed either: the first
      // error is kept and raised by the next add() or flush(); these entries stay out of the store.
      lock.lock();
      if (error_.empty()) error_ = e.what();
      lock.unlock();
    }
    lock.lock();
    writing_ = false;
    idle_cv_.notify_all();
  }
}

void MemoryStore::write_and_commit(std::vector<Pending>& batch) {
  const size_t rec = record_bytes();
  std::string bytes(batch.size() * rec, '\0');
  for (size_t i = 0; i < batch.size(); ++i) {
    char* r = bytes.data() + i * rec;
    std::memcpy(r, &kRecordMagic, 4);
    std::memcpy(r + 4, &batch[i].position, 8);
    std::memcpy(r + 12, &batch[i].score, 4);
    std::memcpy(r + 16, batch[i].kv.data(), batch[i].kv.size() * sizeof(float));
    const uint64_t sum = fnv1a64(r, rec - 8);
    std::memcpy(r + rec - 8, &sum, 8);
  }
  try {
    write_fully(fd_, bytes.data(), bytes.size(), "memory store", path_);
  } catch (...) {
    // Whatever part of the batch reached the file is cut off, so the file ends on a record boundary.
    if (::ftruncate(fd_, static_cast<off_t>(good_size_)) == 0)
      ::lseek(fd_, static_cast<off_t>(good_size_), SEEK_SET);
    throw;
  }
  good_size_ += bytes.size();
  for (const Pending& p : batch) commit(p, false);
}

void MemoryStore::commit(const Pending& p, bool from_disk) {
  std::unique_lock<std::shared_mutex> lock(index_mutex_);
  const size_t id = positions_.size();
  positions_.push_back(p.position);
  earlier_run_.push_back(from_disk ? 1 : 0);
  kv_.insert(kv_.end(), p.kv.begin(), p.kv.end());
  const int row = 2 * kv_heads_ * head_dim_;
  if (!ann_ && positions_.size() > kAnnThreshold) {
    ann_ = std::make_unique<Ann>();
    ann_->capacity = 2 * positions_.size();
    for (int g = 0; g < kv_heads_; ++g) {
      ann_->spaces.push_back(std::make_unique<hnswlib::InnerProductSpace>(head_dim_));
      ann_->graphs.push_back(std::make_unique<hnswlib::HierarchicalNSW<float>>(ann_->spaces.back().get(),
                                                                               ann_->capacity, 16, 100));
      for (size_t i = 0; i < positions_.size(); ++i)
        ann_->graphs[g]->addPoint(kv_.data() + i * row + g * head_dim_, i);
    }
    return;
  }
  if (ann_) {
    if (positions_.size() > ann_->capacity) {
      ann_->capacity *= 2;
      for (auto& graph : ann_->graphs) graph->resizeIndex(ann_->capacity);
    }
    for (int g = 0; g < kv_heads_; ++g) ann_->graphs[g]->addPoint(kv_.data() + id * row + g * head_dim_, id);
  }
}

size_t MemoryStore::size() const {
  std::shared_lock<std::shared_mutex> lock(index_mutex_);
  return positions_.size();
}

std::vector<std::vector<RetrievedEntry>> MemoryStore::retrieve(const float* queries, int r) const {
  std::shared_lock<std::shared_mutex> lock(index_mutex_);
  std::vector<std::vector<RetrievedEntry>> out(kv_heads_);
  const size_t n = positions_.size();
  if (n == 0 || r <= 0) return out;
  const int row = 2 * kv_heads_ * head_dim_;
  for (int g = 0; g < kv_heads_; ++g) {
    const float* q = queries + g * head_dim_;
    std::vector<size_t> ids;
    if (ann_) {
      ann_->graphs[g]->setEf(std::max<size_t>(64, 2 * static_cast<size_t>(r)));
      auto found = ann_->graphs[g]->searchKnn(q, std::min<size_t>(r, n));
      while (!found.empty()) {
        ids.push_back(found.top().second);
        found.pop();
      }
      std::reverse(ids.begin(), ids.end());  // best first
    } else {
      // Exact: the r largest inner products (ties to the earlier entry).
      std::vector<std::pair<float, size_t>> scored(n);
      for (size_t i = 0; i < n; ++i) {
        const float* k = kv_.data() + i * row + g * head_dim_;
        float s = 0.0f;
        for (int c = 0; c < head_dim_; ++c) s += q[c] * k[c];
        scored[i] = {s, i};
      }
      const size_t take = std::min<size_t>(r, n);
      std::partial_sort(scored.begin(), scored.begin() + take, scored.end(),
                        [](const auto& a, const auto& b) {
                          return a.first > b.first || (a.first == b.first && a.second < b.second);
                        });
      for (size_t i = 0; i < take; ++i) ids.push_back(scored[i].second);
    }
    for (size_t id : ids) {
      RetrievedEntry e;
      e.position = earlier_run_[id] ? -1 : positions_[id];
      const float* base = kv_.data() + id * row;
      e.kv.assign(base + g * head_dim_, base + (g + 1) * head_dim_);  // key of head g
      e.kv.insert(e.kv.end(), base + (kv_heads_ + g) * head_dim_,
                  base + (kv_heads_ + g + 1) * head_dim_);  // value
      out[g].push_back(std::move(e));
    }
  }
  return out;
}

}  // namespace bmojo
