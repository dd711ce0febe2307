// Small file helpers shared by the inference state and the long-term memory store: a 64-bit FNV-1a hash
// and an atomic whole-file write (temporary name, fsync, rename), so a crash never leaves a half-written
// file under the final name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bmojo {

inline constexpr uint64_t kFnvOffset = 1469598103934665603ULL;

inline uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = kFnvOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ULL;
  }
  return hash;
}

// Writes bytes to path atomically; throws bmojo::Error naming the path on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);
// Reads a whole file; throws bmojo::Error naming the path when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace bmojo
