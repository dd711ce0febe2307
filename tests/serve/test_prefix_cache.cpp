// The prefix-state cache: the longest cached prefix comes back (never a collision or a longer one), the
// byte bound holds with least-recently-used eviction, and entries survive a save and load while damaged
// files are skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "infer/session.hpp"
#include "serve/prefix_cache.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

class PrefixCacheTest : public test::ScratchDirTest {
 protected:
  PrefixCacheTest() {
    model_ = std::make_unique<Model>(test::small_bm_config());
    test::randomize_model(*model_, 5);
    tokens_ = test::random_tokens(64, 37, 9);
  }
  // The state after the first n tokens, fed in blocks of 8 (as the server's aligned chunks).
  SequenceState state_after(int64_t n) {
    Session s(*model_);
    s.feed(tokens_.data(), n, nullptr, false, 8);
    return s.state();
  }
  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_;
};

TEST_F(PrefixCacheTest, TheLongestMatchingPrefixComesBack) {
  PrefixCache cache(size_t{64} << 20, 8);
  EXPECT_TRUE(cache.keeps(16));
  EXPECT_FALSE(cache.keeps(12));
  for (int64_t n : {8, 16, 32}) cache.insert(tokens_.data(), n, state_after(n));
  auto hit = cache.lookup(tokens_, 40);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->position, 32);
  hit = cache.lookup(tokens_, 31);  // the limit keeps tokens to feed
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->position, 16);
  std::vector<int32_t> other = tokens_;
  other[20] = (other[20] + 1) % 37;  // differs after 16
  hit = cache.lookup(other, 64);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->position, 16);
  other[0] = (other[0] + 1) % 37;
  EXPECT_FALSE(cache.lookup(other, 64));
  const PrefixCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, 3u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.entries, 3u);
  // The cached state continues exactly like the whole prompt fed at once.
  Session whole(*model_);
  BatchSession resumed(*model_);
  std::vector<float> a(37), b(37);
  whole.feed(tokens_.data(), 40, a.data(), false, 8);
  const int64_t id = resumed.join(*cache.lookup(tokens_, 40));
  resumed.step({{id, tokens_.data() + 32, 8}}, b.data());
  EXPECT_EQ(a, b);
}

TEST_F(PrefixCacheTest, TheByteBoundHoldsWithLeastRecentlyUsedEviction) {
  const size_t one = state_after(8).bytes();
  PrefixCache cache(3 * one + 3 * (8 * sizeof(int32_t) + 256) + 200, 8);
  for (int64_t n : {8, 16, 24}) cache.insert(tokens_.data(), n, state_after(n));
  EXPECT_EQ(cache.stats().entries, 3u);
  ASSERT_TRUE(cache.lookup(tokens_, 9));  // 8 is now the most recently used
  cache.insert(tokens_.data(), 32, state_after(32));
  const PrefixCacheStats s = cache.stats();
  EXPECT_LE(s.bytes, s.capacity);
  EXPECT_EQ(s.evicted, 1u);
  EXPECT_EQ(cache.lookup(tokens_, 17)->position, 8) << "16 was the least recently used";
  EXPECT_EQ(cache.lookup(tokens_, 33)->position, 32);
  PrefixCache off(0, 8);
  off.insert(tokens_.data(), 8, state_after(8));
  EXPECT_FALSE(off.lookup(tokens_, 64));
}

TEST_F(PrefixCacheTest, EntriesSurviveSaveAndLoadAndDamagedFilesAreSkipped) {
  PrefixCache cache(size_t{64} << 20, 8);
  for (int64_t n : {8, 16}) cache.insert(tokens_.data(), n, state_after(n));
  EXPECT_EQ(cache.save(path("c"), *model_), 2u);
  EXPECT_EQ(cache.save(path("c"), *model_), 0u) << "nothing new";
  std::ofstream(path("c/0123456789abcdef.state")) << "garbage";
  // A valid state file under another entry's name is refused too.
  fs::copy_file(path("c/") + fs::directory_iterator(path("c"))->path().filename().string(),
                path("c/fedcba9876543210.state"));
  PrefixCache loaded(size_t{64} << 20, 8);
  const std::vector<std::string> notices = loaded.load(path("c"), *model_);
  EXPECT_EQ(notices.size(), 2u);
  EXPECT_EQ(loaded.stats().entries, 2u);
  const auto hit = loaded.lookup(tokens_, 20);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->position, 16);
  EXPECT_EQ(hit->layers[0].memory.rows(), state_after(16).layers[0].memory.rows());
  // Another model's cache is skipped, file by file.
  ModelConfig c = model_->config();
  c.d_model = 24;
  Model other(c);
  PrefixCache foreign(size_t{64} << 20, 8);
  EXPECT_EQ(foreign.load(path("c"), other).size(), 4u);
  EXPECT_EQ(foreign.stats().entries, 0u);
  // A server that keeps bf16 keys and values skips the f32 states (they would not continue as its own
  // prefill does), naming why.
  PrefixCache half(size_t{64} << 20, 8);
  const std::vector<std::string> skipped = half.load(path("c"), *model_, KvStorage::bf16);
  EXPECT_EQ(skipped.size(), 4u);
  EXPECT_EQ(half.stats().entries, 0u);
  EXPECT_EQ(std::count_if(
                skipped.begin(), skipped.end(),
                [](const std::string& n) { return n.find("this server keeps bf16") != std::string::npos; }),
            2);
}

}  // namespace
}  // namespace bmojo
