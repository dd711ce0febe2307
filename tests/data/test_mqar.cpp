#include <gtest/gtest.h>

#include <map>
#include <set>

#include "data/mqar.hpp"
#include "model/model.hpp"

namespace bmojo {
namespace {

DataConfig mqar(int L, int K, int gap = 0, bool random_fill = false) {
  DataConfig d;
  d.seq_len = L;
  d.num_kv_pairs = K;
  d.gap = gap;
  d.random_non_queries = random_fill;
  return d;
}

void check_example(const DataConfig& d, int V, const int32_t* in, const int32_t* tg) {
  const int K = d.num_kv_pairs, ctx = 2 * K, total = d.total_length(), qs = ctx + d.gap;
  std::set<int32_t> keys, values;
  std::map<int32_t, int32_t> value_of;
  for (int i = 0; i < K; ++i) {
    const int32_t k = in[2 * i], v = in[2 * i + 1];
    ASSERT_GE(k, 1);
    ASSERT_LT(k, V / 2);
    ASSERT_GE(v, V / 2);
    ASSERT_LT(v, V);
    keys.insert(k);
    values.insert(v);
    value_of[k] = v;
  }
  EXPECT_EQ(static_cast<int>(keys.size()), K) << "keys drawn without replacement";
  EXPECT_EQ(static_cast<int>(values.size()), K);
  int labelled = 0;
  std::set<int32_t> queried;
  for (int t = 0; t < total; ++t) {
    if (tg[t] == kIgnoreLabel) {
      if (!d.random_non_queries && t >= ctx) {
        EXPECT_EQ(in[t], 0) << "position " << t;
      }
      continue;
    }
    ++labelled;
    ASSERT_GE(t, qs) << "labels only in the query region";
    EXPECT_EQ((t - qs) % 2, 0) << "queries at even offsets 2g";
    ASSERT_TRUE(value_of.count(in[t])) << "a query repeats a key";
    EXPECT_EQ(tg[t], value_of[in[t]]) << "label is the key's value";
    queried.insert(in[t]);
  }
  EXPECT_EQ(labelled, K);
  EXPECT_EQ(static_cast<int>(queried.size()), K) << "each key queried once";
  if (!d.random_non_queries) {
    for (int t = ctx; t < qs; ++t) EXPECT_EQ(in[t], 0) << "gap filler";
  }
}

TEST(Mqar, ExamplesFollowTheDefinition) {
  for (const DataConfig& d : {mqar(64, 4), mqar(128, 8), mqar(256, 16), mqar(64, 4, 100), mqar(20, 5)}) {
    const Batch b = make_batch(d, 8192, 16, 1, Split::kTrain, 3);
    ASSERT_EQ(b.T, d.total_length());
    for (int i = 0; i < b.B; ++i) check_example(d, 8192, &b.inputs[i * b.T], &b.targets[i * b.T]);
  }
}

TEST(Mqar, RandomNonQueriesFillTheZeros) {
  const DataConfig d = mqar(64, 4, 10, true);
  const Batch b = make_batch(d, 100, 8, 2, Split::kTrain, 0);
  int zeros = 0;
  for (int32_t t : b.inputs) zeros += t == 0;
  EXPECT_LT(zeros, 8 * 3);  // a few uniform draws may be 0
  for (int i = 0; i < b.B; ++i) check_example(d, 100, &b.inputs[i * b.T], &b.targets[i * b.T]);
}

TEST(Mqar, DeterministicPerSeedSplitAndIndex) {
  const DataConfig d = mqar(64, 4);
  const Batch a = make_batch(d, 8192, 4, 7, Split::kTrain, 5);
  EXPECT_EQ(a.inputs, make_batch(d, 8192, 4, 7, Split::kTrain, 5).inputs);
  EXPECT_NE(a.inputs, make_batch(d, 8192, 4, 8, Split::kTrain, 5).inputs);
  EXPECT_NE(a.inputs, make_batch(d, 8192, 4, 7, Split::kEval, 5).inputs);
  EXPECT_NE(a.inputs, make_batch(d, 8192, 4, 7, Split::kTrain, 6).inputs);
}

TEST(Mqar, GapsFavourShortDistances) {
  // p(g) ~ (g+1)^(a-1), a = 0.01: nearly 1/(g+1); the first query slot is taken far more often than the last.
  const DataConfig d = mqar(256, 4);
  const int S = (256 - 8) / 2;
  std::vector<int> hits(S, 0);
  const Batch b = make_batch(d, 8192, 2000, 3, Split::kTrain, 0);
  for (int i = 0; i < b.B; ++i)
    for (int t = 8; t < 256; ++t)
      if (b.targets[i * b.T + t] != kIgnoreLabel) ++hits[(t - 8) / 2];
  int first = 0, last = 0;
  for (int g = 0; g < 10; ++g) first += hits[g];
  for (int g = S - 10; g < S; ++g) last += hits[g];
  EXPECT_GT(first, 4 * last);
}

TEST(RandomTokens, EveryPositionLabelledWithTheNextToken) {
  DataConfig d;
  d.task = "random";
  d.seq_len = 16;
  const Batch b = make_batch(d, 50, 3, 1, Split::kTrain, 0);
  for (int i = 0; i < b.B; ++i)
    for (int t = 0; t + 1 < b.T; ++t) EXPECT_EQ(b.targets[i * b.T + t], b.inputs[i * b.T + t + 1]);
}

}  // namespace
}  // namespace bmojo
