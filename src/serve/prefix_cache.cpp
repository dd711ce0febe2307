#include "serve/prefix_cache.hpp"

#include <algorithm>
#include <filesystem>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/safetensors.hpp"
#include "infer/state_file.hpp"

namespace bmojo {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSuffix = ".state";

// Bookkeeping beside the state proper: the tokens and the containers.
size_t entry_bytes(const SequenceState& state, int64_t length) {
  return state.bytes() + static_cast<size_t>(length) * sizeof(int32_t) + 256;
}

}  // namespace

PrefixCache::PrefixCache(size_t capacity_bytes, int64_t every) : capacity_(capacity_bytes), every_(every) {
  check(every >= 1, "prefix cache: the snapshot interval must be >= 1 token");
  counts_.capacity = capacity_bytes;
}

uint64_t PrefixCache::key_of(const int32_t* tokens, int64_t length) {
  const uint64_t n = static_cast<uint64_t>(length);
  return fast_hash64(tokens, static_cast<size_t>(length) * sizeof(int32_t), fnv1a64(&n, sizeof n));
}

std::optional<SequenceState> PrefixCache::lookup(const std::vector<int32_t>& tokens, int64_t limit) {
  if (!enabled()) return std::nullopt;
  limit = std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()));
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t length = limit / every_ * every_; length > 0; length -= every_) {
    const auto it = entries_.find(key_of(tokens.data(), length));
    if (it == entries_.end()) continue;
    const Entry& e = it->second;
    if (static_cast<int64_t>(e.tokens.size()) != length ||
        !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin()))
      continue;
    lru_.splice(lru_.begin(), lru_, e.lru);
    ++counts_.hits;
    return e.state;
  }
  ++counts_.misses;
  return std::nullopt;
}

void PrefixCache::insert(const int32_t* tokens, int64_t length, const SequenceState& state) {
  if (!enabled() || length != state.position || entry_bytes(state, length) > capacity_) return;
  const uint64_t key = key_of(tokens, length);
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = entries_.find(key);
  if (it != entries_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return;
  }
  insert_locked(key, std::vector<int32_t>(tokens, tokens + length), state);
}

void PrefixCache::insert_locked(uint64_t key, std::vector<int32_t> tokens, SequenceState state) {
  const size_t bytes = entry_bytes(state, static_cast<int64_t>(tokens.size()));
  while (bytes_ + bytes > capacity_ && !lru_.empty()) {
    const uint64_t victim = lru_.back();
    lru_.pop_back();
    bytes_ -= entries_.at(victim).bytes;
    entries_.erase(victim);
    evicted_keys_.push_back(victim);
    ++counts_.evicted;
  }
  lru_.push_front(key);
  Entry& e = entries_[key];
  e.tokens = std::move(tokens);
  e.state = std::move(state);
  e.bytes = bytes;
  e.lru = lru_.begin();
  bytes_ += bytes;
  ++counts_.inserted;
}

PrefixCacheStats PrefixCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  PrefixCacheStats s = counts_;
  s.entries = entries_.size();
  s.bytes = bytes_;
  return s;
}

size_t PrefixCache::save(const std::string& dir, const Model& model) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "prefix cache: cannot create directory '" + dir + "': " + ec.message());
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t key : evicted_keys_)
    if (entries_.count(key) == 0 && on_disk_.erase(key) > 0)
      fs::remove(fs::path(dir) / (hex64(key) + kSuffix), ec);
  evicted_keys_.clear();
  size_t written = 0;
  for (const auto& [key, e] : entries_) {
    if (on_disk_.count(key) > 0) continue;  // entries never change: the file holds this one
    save_sequence_state((fs::path(dir) / (hex64(key) + kSuffix)).string(), e.state, model, &e.tokens);
    on_disk_.insert(key);
    ++written;
  }
  return written;
}

std::vector<std::string> PrefixCache::load(const std::string& dir, const Model& model, KvStorage storage) {
  std::vector<std::string> notices;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return notices;
  std::vector<fs::path> files;
  for (const auto& item : fs::directory_iterator(dir, ec))
    if (item.path().extension() == kSuffix) files.push_back(item.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& path : files) {
    try {
      std::vector<int32_t> tokens;
      SequenceState state = load_sequence_state(path.string(), model, &tokens);
      const uint64_t key = key_of(tokens.data(), static_cast<int64_t>(tokens.size()));
      check(path.stem().string() == hex64(key),
            "prefix cache file '" + path.string() + "' is not named by the hash of its tokens");
      if (tokens.empty() || static_cast<int64_t>(tokens.size()) % every_ != 0) {
        notices.push_back("prefix cache: skipped '" + path.string() + "' (its " +
                          std::to_string(tokens.size()) + " tokens are not a multiple of the interval " +
                          std::to_string(every_) + ")");
        continue;
      }
      // A state kept in the other storage would continue differently from this server's own prefill.
      if (state.storage() != storage) {
        notices.push_back("prefix cache: skipped '" + path.string() + "' (its keys and values are " +
                          kv_storage_name(state.storage()) + ", this server keeps " +
                          kv_storage_name(storage) + ")");
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (entries_.count(key) > 0 || entry_bytes(state, state.position) > capacity_) continue;
      insert_locked(key, std::move(tokens), std::move(state));
      on_disk_.insert(key);
    } catch (const Error& e) {
      notices.push_back(std::string("prefix cache: skipped a file: ") + e.what());
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  counts_.inserted = 0;
  for (uint64_t key : evicted_keys_) on_disk_.erase(key);  // pushed out by load: left on disk
  evicted_keys_.clear();
  return notices;
}

}  // namespace bmojo
