// Token files: a tokenized corpus split, memory-mapped by training and evaluation.
//
// Layout (little-endian), version 1:
//   0   char[8]  magic "BMJTOKNS"
//   8   u32      version (1)
//   12  u32      token width in bytes (2 or 4)
//   16  u32      vocab size
//   20  u32      tokenizer kind (0 byte, 1 sentencepiece)
//   24  u64      tokenizer hash (data/tokenizer.hpp)
//   32  u64      token count N
//   40  u64      document count D
//   48  u64      text bytes (sum over documents)
//   56  u64      FNV-1a checksum of everything after the header
//   64  u8[V]    bytes of text each token id decodes to (capped at 255), for bits per byte
//   ..  pad to a multiple of 8
//   ..  u64[D+1] document start offsets in tokens (0, ..., N)
//   ..  tokens   N ids of the given width
// Every field is checked on open; a truncated, corrupted or foreign file is a clear error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.hpp"

namespace bmojo {

inline constexpr uint32_t kTokenFileVersion = 1;

struct TokenFileHeader {
  uint32_t version = kTokenFileVersion;
  uint32_t token_width = 2;
  uint32_t vocab_size = 0;
  uint32_t tokenizer_kind = 0;
  uint64_t tokenizer_hash = 0;
  uint64_t num_tokens = 0;
  uint64_t num_docs = 0;
  uint64_t num_bytes = 0;
  uint64_t checksum = 0;
};

// Tokenizes documents and writes a token file atomically. Returns the header written.
TokenFileHeader write_token_file(const std::string& path, const Tokenizer& tokenizer,
                                 const std::vector<std::string>& documents);

// A read-only, memory-mapped token file.
class TokenFile {
 public:
  // Opens and validates (header, sizes, offsets, checksum, every id < vocab).
  explicit TokenFile(const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const TokenFileHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(header_.num_tokens); }
  int64_t num_docs() const { return static_cast<int64_t>(header_.num_docs); }
  int32_t operator[](int64_t i) const {
    return header_.token_width == 2 ? static_cast<int32_t>(u16_[i]) : static_cast<int32_t>(u32_[i]);
  }
  void copy(int64_t begin, int64_t count, int32_t* out) const;
  int64_t doc_begin(int64_t d) const { return static_cast<int64_t>(offsets_[d]); }
  int64_t doc_end(int64_t d) const { return static_cast<int64_t>(offsets_[d + 1]); }
  int token_bytes(int32_t id) const { return piece_bytes_[id]; }

 private:
  std::string path_;
  TokenFileHeader header_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* piece_bytes_ = nullptr;
  const uint64_t* offsets_ = nullptr;
  const uint16_t* u16_ = nullptr;
  const uint32_t* u32_ = nullptr;
};

// Throws unless the file was made with this tokenizer.
void check_token_file_tokenizer(const TokenFile& file, const Tokenizer& tokenizer);
// Throws unless the file fits a model: its vocabulary is not larger than the model's.
void check_token_file_vocab(const TokenFile& file, int model_vocab);

}  // namespace bmojo
