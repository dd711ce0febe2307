// safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range (plus __metadata__ strings), then the raw little-endian fp32 data. Written through
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

struct SafetensorsItem {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // numel = product of shape
};

// what names the writer in error messages ("checkpoint", ...).
void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata, const std::string& what);

struct SafetensorsTensor {
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

// A whole safetensors file of F32 tensors, read and checked: the header parses (nesting limited), every
// entry is an F32 tensor whose byte range holds its shape, and the ranges tile the data section exactly
// (no overlap, no hole, nothing past the end). checksum_ok says whether the stored checksum matched;
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
};

// Throws bmojo::Error starting with `what 'path': ` for anything malformed, and for a checksum mismatch.
SafetensorsFile read_safetensors(const std::string& path, const std::string& what);

}  // namespace bmojo
