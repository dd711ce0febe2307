// safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range (plus __metadata__ strings), then the raw little-endian data: F32 tensors, and I64
// ones for integers a float cannot hold exactly (positions in inference state files). Written through
// the atomic writer (core/file_io.hpp), so an interrupted write never leaves a broken file under the final
// name. Used by checkpoints and by the parity dumps.
//
// Integrity: the writer adds __metadata__["checksum"], a fast_hash64 chained over the header (without that
// key, in nlohmann's canonical sorted dump) and then every tensor's bytes in file order. Other readers ignore
// it; ours recompute it, so a flipped byte anywhere, an edited config or moved offsets are detected.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bmojo {

inline constexpr const char* kChecksumKey = "checksum";

// 16 lower-case hex digits: how checksums and fingerprints are written into metadata.
std::string hex64(uint64_t v);

struct SafetensorsItem {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;   // numel = product of shape
  const int64_t* i64 = nullptr;  // instead of data: an I64 tensor
};

// what names the writer in error messages ("checkpoint", ...).
void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata, const std::string& what);

struct SafetensorsTensor {
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
  bool i64 = false;             // dtype I64 (else F32)
  uint64_t numel() const { return (end - begin) / (i64 ? 8 : 4); }
};

// A whole safetensors file of F32 and I64 tensors, read and checked: the header parses (nesting limited),
// every entry is an F32 or I64 tensor whose byte range holds its shape, and the ranges tile the data section
// exactly (no overlap, no hole, nothing past the end). checksum_ok says whether the stored checksum matched;
// has_checksum false for files written without one.
struct SafetensorsFile {
  nlohmann::json metadata;  // {} when the header has none
  std::map<std::string, SafetensorsTensor> tensors;
  std::string bytes;
  uint64_t data_start = 0;
  bool has_checksum = false;
  const float* data(const SafetensorsTensor& t) const {
    return reinterpret_cast<const float*>(bytes.data() + data_start + t.begin);
  }
  // An I64 tensor's values (copied: its offset need not be 8-byte aligned).
  std::vector<int64_t> i64_values(const SafetensorsTensor& t) const;
};

// Throws bmojo::Error starting with `what 'path': ` for anything malformed, and for a checksum mismatch.
SafetensorsFile read_safetensors(const std::string& path, const std::string& what);

}  // namespace bmojo
