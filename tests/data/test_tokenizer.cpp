// Tokenizers: byte-exact round trips of arbitrary bytes (invalid UTF-8 included) for the byte tokenizer
// and for SentencePiece BPE trained here, compression, hashes, and clear errors for bad model files.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "data/text_fixture.hpp"
#include "data/tokenizer.hpp"

namespace bmojo {
namespace {

const Tokenizer& bpe() {
  static const Tokenizer t = [] {
    SentencePieceTrainOptions o;
    o.vocab_size = 320;
    o.threads = 1;
    return Tokenizer::from_sentencepiece(train_sentencepiece(test::synthetic_documents(40, 30, 5), o),
                                         "test");
  }();
  return t;
}

std::vector<std::string> hard_strings() {
  std::vector<std::string> s = {
      "",
      "The great white whale.",
      "  leading and trailing spaces  ",
      "tabs\tand\nnewlines\r\n\n",
      "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x90\xB3",  // é, 日本, 🐳
      "\xFF\xFE invalid start bytes",
      "truncated \xE6\x97",
      "overlong \xC0\xAF and \xE0\x80\xAF",
      "surrogate \xED\xA0\x80 and above max \xF4\x90\x80\x80",
      "lone continuation \x80\xBF",
      "meta symbol \xE2\x96\x81 itself",
      std::string("nul \0 inside", 13),
  };
  Rng rng(77);
  for (int i = 0; i < 20; ++i) {
    std::string r(1 + rng.below(300), '\0');
    for (char& c : r) c = static_cast<char>(rng.below(256));
    s.push_back(r);
  }
  return s;
}

TEST(Tokenizer, ByteRoundTripsArbitraryBytes) {
  const Tokenizer t;
  EXPECT_EQ(t.vocab_size(), 256);
  for (const std::string& s : hard_strings()) {
    const std::vector<int32_t> ids = t.encode(s);
    ASSERT_EQ(ids.size(), s.size());
    EXPECT_EQ(t.decode(ids), s);
    for (int32_t id : ids) EXPECT_EQ(t.token_bytes(id), 1);
  }
}

TEST(Tokenizer, BpeRoundTripsArbitraryBytesIncludingInvalidUtf8) {
  const Tokenizer& t = bpe();
  EXPECT_EQ(t.kind(), TokenizerKind::kSentencePiece);
  EXPECT_EQ(t.vocab_size(), 320);
  for (const std::string& s : hard_strings()) {
    const std::vector<int32_t> ids = t.encode(s);
    EXPECT_EQ(t.decode(ids), s) << "input of " << s.size() << " bytes";
    size_t bytes = 0;
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, t.vocab_size());
      bytes += t.token_bytes(id);
    }
    EXPECT_EQ(bytes, s.size());  // bits per byte counts exactly the bytes of the text
  }
}

TEST(Tokenizer, BpeCompressesTextItWasTrainedOn) {
  const Tokenizer& t = bpe();
  const std::string text = test::synthetic_documents(1, 50, 999)[0];  // same distribution, unseen text
  const size_t n = t.encode(text).size();
  EXPECT_LT(static_cast<double>(n), 0.75 * text.size()) << n << " tokens for " << text.size() << " bytes";
}

TEST(Tokenizer, HashesTellTokenizersApart) {
  const Tokenizer byte;
  EXPECT_EQ(byte.hash(), byte_tokenizer_hash());
  EXPECT_NE(bpe().hash(), byte.hash());
  SentencePieceTrainOptions o;
  o.vocab_size = 300;
  o.threads = 1;
  const Tokenizer other =
      Tokenizer::from_sentencepiece(train_sentencepiece(test::synthetic_documents(40, 30, 5), o), "other");
  EXPECT_NE(other.hash(), bpe().hash());
  // Same model bytes, same hash.
  EXPECT_EQ(Tokenizer::from_sentencepiece(bpe().model_bytes(), "copy").hash(), bpe().hash());
}

TEST(Tokenizer, BadModelFilesAreClearErrors) {
  try {
    Tokenizer::from_sentencepiece("definitely not a protobuf", "junk.model");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::load("/nonexistent/tokenizer.model"), Error);
  SentencePieceTrainOptions o;
  o.vocab_size = 100;
  EXPECT_THROW(train_sentencepiece(test::synthetic_documents(2, 2, 1), o), Error);
  o.vocab_size = 300;
  EXPECT_THROW(train_sentencepiece({}, o), Error);
}

// SentencePiece's trie builder throws through the library on an empty piece or one with a NUL byte
// (found by fuzz_tokenizer: tests/fuzz/corpus/tokenizer/empty_piece_after_nul); such models are refused.
TEST(Tokenizer, ModelsWithEmptyOrNulPiecesAreRefused) {
  // ModelProto { pieces { piece: P, score: 0, type: NORMAL } x 2 } in protobuf wire format.
  const auto piece = [](const std::string& p) {
    std::string m = "\x0a" + std::string(1, static_cast<char>(p.size())) + p + std::string("\x15\0\0\0\0", 5);
    return "\x0a" + std::string(1, static_cast<char>(m.size())) + m;
  };
  for (const std::string& bad : {std::string(), std::string("a\0b", 3)}) {
    const std::string model = piece("<unk>") + piece(bad);
    try {
      Tokenizer::from_sentencepiece(model, "bad.model");
      ADD_FAILURE() << "a model with piece '" << bad << "' loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("piece 1"), std::string::npos) << e.what();
    }
  }
  const std::string fuzzed =
      std::string(BMOJO_SOURCE_DIR) + "/tests/fuzz/corpus/tokenizer/empty_piece_after_nul";
  EXPECT_THROW(Tokenizer::load(fuzzed), Error);
}

}  // namespace
}  // namespace bmojo
