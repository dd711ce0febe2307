#include "data/token_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "core/file_io.hpp"

namespace bmojo {

namespace {

constexpr char kMagic[8] = {'B', 'M', 'J', 'T', 'O', 'K', 'N', 'S'};
constexpr size_t kHeaderBytes = 64;

size_t padded(size_t n) {
  return (n + 7) / 8 * 8;
}

template <typename T>
void put(std::string& s, size_t at, T v) {
  std::memcpy(s.data() + at, &v, sizeof v);
}

template <typename T>
T get(const uint8_t* p, size_t at) {
  T v;
  std::memcpy(&v, p + at, sizeof v);
  return v;
}

}  // namespace

TokenFileHeader write_token_file(const std::string& path, const Tokenizer& tokenizer,
                                 const std::vector<std::string>& documents) {
  TokenFileHeader h;
  h.vocab_size = static_cast<uint32_t>(tokenizer.vocab_size());
  h.token_width = tokenizer.vocab_size() <= 65536 ? 2 : 4;
  h.tokenizer_kind = static_cast<uint32_t>(tokenizer.kind());
  h.tokenizer_hash = tokenizer.hash();
  h.num_docs = documents.size();
  std::vector<uint64_t> offsets{0};
  std::vector<int32_t> tokens;
  for (const std::string& d : documents) {
    const std::vector<int32_t> ids = tokenizer.encode(d);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    offsets.push_back(tokens.size());
    h.num_bytes += d.size();
  }
  h.num_tokens = tokens.size();
  const size_t table = padded(h.vocab_size);
  std::string body(table + offsets.size() * 8 + tokens.size() * h.token_width, '\0');
  for (uint32_t id = 0; id < h.vocab_size; ++id)
    body[id] = static_cast<char>(std::min(255, tokenizer.token_bytes(static_cast<int32_t>(id))));
  std::memcpy(body.data() + table, offsets.data(), offsets.size() * 8);
  size_t at = table + offsets.size() * 8;
  for (int32_t t : tokens) {
    if (h.token_width == 2)
      put(body, at, static_cast<uint16_t>(t));
    else
      put(body, at, static_cast<uint32_t>(t));
    at += h.token_width;
  }
  h.checksum = fnv1a64(body.data(), body.size());
  std::string head(kHeaderBytes, '\0');
  std::memcpy(head.data(), kMagic, 8);
  put(head, 8, h.version);
  put(head, 12, h.token_width);
  put(head, 16, h.vocab_size);
  put(head, 20, h.tokenizer_kind);
  put(head, 24, h.tokenizer_hash);
  put(head, 32, h.num_tokens);
  put(head, 40, h.num_docs);
  put(head, 48, h.num_bytes);
  put(head, 56, h.checksum);
  write_file_atomic(path, head + body, "token file");
  return h;
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  require_regular_file(path, "token file");
  const std::string where = "token file " + path + ": ";
  const int fd = ::open(path.c_str(), O_RDONLY);
  check(fd >= 0, where + "cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(where + "not a regular file");
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < kHeaderBytes) {
    ::close(fd);
    fail(where + "truncated: " + std::to_string(map_size_) + " bytes, shorter than the 64-byte header");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(where + "cannot map (" + std::strerror(errno) + ")");
  }
  try {
    const auto* p = static_cast<const uint8_t*>(map_);
    check(std::memcmp(p, kMagic, 8) == 0,
          where + "not a bmojo token file (bad magic; make one with `bmojo data encode`)");
    header_.version = get<uint32_t>(p, 8);
    check(header_.version == kTokenFileVersion, where + "format version " + std::to_string(header_.version) +
                                                    ", this build reads version " +
                                                    std::to_string(kTokenFileVersion));
    header_.token_width = get<uint32_t>(p, 12);
    header_.vocab_size = get<uint32_t>(p, 16);
    header_.tokenizer_kind = get<uint32_t>(p, 20);
    header_.tokenizer_hash = get<uint64_t>(p, 24);
    header_.num_tokens = get<uint64_t>(p, 32);
    header_.num_docs = get<uint64_t>(p, 40);
    header_.num_bytes = get<uint64_t>(p, 48);
    header_.checksum = get<uint64_t>(p, 56);
    check(header_.token_width == 2 || header_.token_width == 4,
          where + "token width " + std::to_string(header_.token_width) + " (must be 2 or 4)");
    check(header_.vocab_size > 0 && header_.vocab_size <= (1u << 30),
          where + "vocab size " + std::to_string(header_.vocab_size) + " is out of range");
    check(header_.token_width == 4 || header_.vocab_size <= 65536,
          where + "vocab size " + std::to_string(header_.vocab_size) + " does not fit 2-byte tokens");
    check(header_.tokenizer_kind <= 1,
          where + "unknown tokenizer kind " + std::to_string(header_.tokenizer_kind));
    check(header_.num_tokens < (1ull << 40) && header_.num_docs < (1ull << 32),
          where + "token or document count out of range");
    const size_t table = padded(header_.vocab_size);
    const size_t expected =
        kHeaderBytes + table + (header_.num_docs + 1) * 8 + header_.num_tokens * header_.token_width;
    check(map_size_ >= expected, where + "truncated: " + std::to_string(map_size_) +
                                     " bytes, the header says " + std::to_string(expected));
    check(map_size_ == expected, where + std::to_string(map_size_ - expected) +
                                     " unexpected bytes after the tokens (the header says " +
                                     std::to_string(expected) + " bytes)");
    check(fnv1a64(p + kHeaderBytes, expected - kHeaderBytes) == header_.checksum,
          where + "checksum mismatch: the file is corrupted");
    piece_bytes_ = p + kHeaderBytes;
    offsets_ = reinterpret_cast<const uint64_t*>(p + kHeaderBytes + table);
    const uint8_t* tokens = p + kHeaderBytes + table + (header_.num_docs + 1) * 8;
    if (header_.token_width == 2)
      u16_ = reinterpret_cast<const uint16_t*>(tokens);
    else
      u32_ = reinterpret_cast<const uint32_t*>(tokens);
    check(offsets_[0] == 0 && offsets_[header_.num_docs] == header_.num_tokens,
          where + "document offsets do not span the tokens");
    for (uint64_t d = 0; d < header_.num_docs; ++d)
      if (offsets_[d] > offsets_[d + 1]) fail(where + "document offsets are not increasing");
    for (int64_t i = 0; i < size(); ++i)  // not check(): its message would be built for every token
      if (static_cast<uint32_t>((*this)[i]) >= header_.vocab_size)
        fail(where + "token " + std::to_string((*this)[i]) + " at position " + std::to_string(i) +
             " is outside the vocabulary of " + std::to_string(header_.vocab_size));
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_size_);
}

void TokenFile::copy(int64_t begin, int64_t count, int32_t* out) const {
  if (u16_)
    for (int64_t i = 0; i < count; ++i) out[i] = u16_[begin + i];
  else
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(u32_[begin + i]);
}

void check_token_file_tokenizer(const TokenFile& file, const Tokenizer& tokenizer) {
  const TokenFileHeader& h = file.header();
  check(h.tokenizer_hash == tokenizer.hash() && h.vocab_size == static_cast<uint32_t>(tokenizer.vocab_size()),
        "token file " + file.path() + " was made with another tokenizer (" +
            (h.tokenizer_kind == 0 ? std::string("byte") : std::string("sentencepiece")) + ", vocab " +
            std::to_string(h.vocab_size) + ") than the one given (" + tokenizer.kind_name() + ", vocab " +
            std::to_string(tokenizer.vocab_size()) + ")");
}

void check_token_file_vocab(const TokenFile& file, int model_vocab) {
  check(static_cast<int64_t>(file.header().vocab_size) <= model_vocab,
        "token file " + file.path() + " has a vocabulary of " + std::to_string(file.header().vocab_size) +
            " tokens, larger than the model's model.vocab_size = " + std::to_string(model_vocab));
}

}  // namespace bmojo
