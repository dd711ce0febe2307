// Writing safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range (plus __metadata__ strings), then the raw little-endian fp32 data. The file
// is written under a temporary name, synced and renamed (and its directory synced), so an interrupted
// write never leaves a broken file under the final name. Used by checkpoints and by the parity dumps.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bmojo {

struct SafetensorsItem {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // numel = product of shape
};

// what names the writer in error messages ("checkpoint", ...).
void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata, const std::string& what);

}  // namespace bmojo
