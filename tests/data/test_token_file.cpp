// Token files and text batches: round trip, header validation (each bad file a clear error), deterministic
// random windows per seed, contiguous evaluation windows.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "data/batches.hpp"
#include "data/text_fixture.hpp"
#include "data/token_file.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

class TokenFileTest : public test::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    docs_ = test::synthetic_documents(5, 20, 3);
    path_ = (dir_ / "t.bmtok").string();
    write_token_file(path_, Tokenizer(), docs_);
  }
  // Writes a modified copy of the good file and expects opening it to fail naming `needle`.
  void expect_bad(const std::function<void(std::string&)>& edit, const std::string& needle) {
    std::string bytes = read_file(path_);
    edit(bytes);
    const std::string bad = (dir_ / "bad.bmtok").string();
    std::ofstream(bad, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    try {
      TokenFile f(bad);
      FAIL() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.bmtok"), std::string::npos) << e.what();
    }
  }

  std::vector<std::string> docs_;
  std::string path_;
};

TEST_F(TokenFileTest, RoundTripsDocumentsAndHeader) {
  const TokenFile f(path_);
  const TokenFileHeader& h = f.header();
  EXPECT_EQ(h.version, kTokenFileVersion);
  EXPECT_EQ(h.vocab_size, 256u);
  EXPECT_EQ(h.token_width, 2u);
  EXPECT_EQ(h.tokenizer_hash, byte_tokenizer_hash());
  ASSERT_EQ(f.num_docs(), 5);
  size_t total = 0;
  for (int d = 0; d < 5; ++d) {
    ASSERT_EQ(f.doc_end(d) - f.doc_begin(d), static_cast<int64_t>(docs_[d].size()));
    for (size_t i = 0; i < docs_[d].size(); ++i)
      ASSERT_EQ(f[f.doc_begin(d) + static_cast<int64_t>(i)], static_cast<unsigned char>(docs_[d][i]));
    total += docs_[d].size();
  }
  EXPECT_EQ(f.size(), static_cast<int64_t>(total));
  EXPECT_EQ(h.num_bytes, total);
  EXPECT_EQ(f.token_bytes('a'), 1);
  check_token_file_tokenizer(f, Tokenizer());
}

TEST_F(TokenFileTest, BadFilesAreClearErrors) {
  expect_bad([](std::string& b) { b[0] = 'X'; }, "bad magic");
  expect_bad([](std::string& b) { b[8] = 2; }, "format version 2");
  expect_bad([](std::string& b) { b[12] = 3; }, "token width 3");
  expect_bad([](std::string& b) { b.resize(b.size() - 7); }, "truncated");
  expect_bad([](std::string& b) { b.resize(40); }, "truncated");
  expect_bad([](std::string& b) { b += "xx"; }, "unexpected bytes");
  expect_bad([](std::string& b) { b[b.size() - 3] ^= 0x5A; }, "checksum");
  // A vocabulary smaller than the ids in the file (header edited, checksum untouched: caught either way).
  expect_bad([](std::string& b) { b[16] = 10, b[17] = 0; }, "bmtok");
}

TEST_F(TokenFileTest, WrongTokenizerOrVocabularyIsRejected) {
  const TokenFile f(path_);
  SentencePieceTrainOptions o;
  o.vocab_size = 300;
  o.threads = 1;
  const Tokenizer bpe = Tokenizer::from_sentencepiece(train_sentencepiece(docs_, o), "bpe");
  try {
    check_token_file_tokenizer(f, bpe);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another tokenizer"), std::string::npos) << e.what();
  }
  try {
    check_token_file_vocab(f, 100);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.vocab_size"), std::string::npos) << e.what();
  }
  check_token_file_vocab(f, 256);
  EXPECT_THROW(TokenFile((dir_ / "missing.bmtok").string()), Error);
}

TEST_F(TokenFileTest, RandomBatchesAreDeterministicPerSeedAndShifted) {
  const TokenFile f(path_);
  const Batch a = text_random_batch(f, 32, 4, 7, 3);
  const Batch b = text_random_batch(f, 32, 4, 7, 3);
  EXPECT_EQ(a.inputs, b.inputs);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_NE(a.inputs, text_random_batch(f, 32, 4, 8, 3).inputs);  // other seed
  EXPECT_NE(a.inputs, text_random_batch(f, 32, 4, 7, 4).inputs);  // other batch
  for (int s = 0; s < 4; ++s)
    for (int t = 0; t + 1 < 32; ++t) EXPECT_EQ(a.inputs[s * 32 + t + 1], a.targets[s * 32 + t]);
}

TEST_F(TokenFileTest, ContiguousBatchesCoverTheFileOnce) {
  const TokenFile f(path_);
  const int T = 50;
  const int64_t windows = text_windows(f, T);
  ASSERT_GT(windows, 4);
  std::vector<int32_t> seen;
  const int B = 3;
  for (uint64_t i = 0; i * B < static_cast<uint64_t>(windows); ++i) {
    const Batch b = text_contiguous_batch(f, T, B, i);
    for (int s = 0; s < B; ++s) {
      const uint64_t w = i * B + s;
      for (int t = 0; t < T; ++t) {
        const int32_t target = b.targets[s * T + t];
        if (w >= static_cast<uint64_t>(windows)) {
          EXPECT_EQ(target, kIgnoreLabel);
        } else {
          EXPECT_EQ(b.inputs[s * T + t], f[static_cast<int64_t>(w) * T + t]);
          seen.push_back(target);
        }
      }
    }
  }
  ASSERT_EQ(static_cast<int64_t>(seen.size()), windows * T);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], f[static_cast<int64_t>(i) + 1]);
}

}  // namespace
}  // namespace bmojo
