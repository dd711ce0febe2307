// Tokenizers for text. Two kinds, one interface:
// - byte: a token is one byte of the input (id = byte value, vocabulary 256). Needs no files.
// - sentencepiece: BPE trained on a corpus with SentencePiece (Debian's libsentencepiece), with byte
//   fallback, identity normalisation and no whitespace rewriting, so every byte sequence encodes and
//   decodes back to itself. Invalid UTF-8 (and the meta symbol U+2581, which SentencePiece would turn into
//   a space) is encoded through the byte pieces <0xNN>; decoding is done here from the piece table, byte by
//   byte, so even a sequence of byte pieces that is not valid UTF-8 comes back unchanged.
// A tokenizer has a hash (of its kind and, for sentencepiece, its model file's bytes) that token files and
// checkpoints record, so a model never silently runs with another tokenizer than it was trained with.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace bmojo {

enum class TokenizerKind : uint32_t { kByte = 0, kSentencePiece = 1 };

class Tokenizer {
 public:
  // The byte tokenizer.
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // "byte" gives the byte tokenizer; anything else is the path of a SentencePiece model file.
  static Tokenizer load(const std::string& spec);
  // A SentencePiece model from its serialized bytes (`where` names it in errors).
  static Tokenizer from_sentencepiece(std::string model_bytes, const std::string& where);

  TokenizerKind kind() const { return kind_; }
  std::string kind_name() const { return kind_ == TokenizerKind::kByte ? "byte" : "sentencepiece"; }
  int vocab_size() const { return vocab_; }
  uint64_t hash() const { return hash_; }
  // The serialized SentencePiece model (empty for byte).
  const std::string& model_bytes() const { return model_bytes_; }

  std::vector<int32_t> encode(std::string_view text) const;
  // Ids outside the vocabulary decode to "<|id|>"; control pieces to nothing.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode(int32_t id) const;
  // Bytes of text that token decodes to (0 for control pieces), for bits per byte.
  int token_bytes(int32_t id) const;

 private:
  TokenizerKind kind_ = TokenizerKind::kByte;
  int vocab_ = 256;
  uint64_t hash_ = 0;
  std::string model_bytes_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<std::string> pieces_;  // decoded bytes of each id
  std::vector<int32_t> byte_ids_;    // id of <0xNN> for each byte value
};

struct SentencePieceTrainOptions {
  int vocab_size = 4096;
  int max_piece_bytes = 2048;  // documents are cut into sentences of at most this many bytes
  int64_t max_sentences = 2000000;
  int threads = 2;
  bool verbose = false;
};

// Trains BPE on the given documents (their text) and returns the serialized model.
std::string train_sentencepiece(const std::vector<std::string>& documents,
                                const SentencePieceTrainOptions& o);

// The hash the byte tokenizer reports.
uint64_t byte_tokenizer_hash();

}  // namespace bmojo
