// Byte-level tokenizer: a token is one byte of the UTF-8 (or any) input, id = byte value. It needs no
// files and round-trips arbitrary bytes; models using it need vocab_size >= 256. Ids >= 256 (a model with a
// larger vocabulary may produce them) decode to "<|id|>".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bmojo {

struct ByteTokenizer {
  static constexpr int kVocab = 256;
  static std::vector<int32_t> encode(std::string_view text) {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  static std::string decode(int32_t id) {
    if (id >= 0 && id < kVocab) return std::string(1, static_cast<char>(id));
    return "<|" + std::to_string(id) + "|>";
  }
  static std::string decode(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += decode(id);
    return s;
  }
};

}  // namespace bmojo
