// Sampling: draws follow the tempered softmax, top-k and top-p keep exactly the tokens they should, greedy
// is the argmax (ties to the smaller id), and a seed fixes the draws.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "infer/sampler.hpp"

namespace bmojo {
namespace {

std::vector<double> frequencies(const SamplingOptions& o, const std::vector<float>& logits, int draws) {
  Sampler s(o);
  std::vector<double> f(logits.size());
  for (int i = 0; i < draws; ++i) f[s.sample(logits.data(), static_cast<int>(logits.size()))] += 1.0 / draws;
  return f;
}

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 1.0f, 0.0f, 1.5f, -0.5f, 0.25f};

TEST(Sampler, DrawsFollowTheTemperedSoftmax) {
  for (double t : {0.5, 1.0, 1.7}) {
    SamplingOptions o;
    o.temperature = t;
    o.seed = 3;
    const std::vector<double> f = frequencies(o, kLogits, 200000);
    double z = 0.0;
    for (float l : kLogits) z += std::exp(l / t);
    for (size_t i = 0; i < kLogits.size(); ++i) {
      const double p = std::exp(kLogits[i] / t) / z;
      EXPECT_NEAR(f[i], p, 4.0 * std::sqrt(p * (1 - p) / 200000) + 1e-4) << "t " << t << " token " << i;
    }
  }
}

TEST(Sampler, TopKAndTopPKeepTheRightTokens) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_k = 3;  // tokens 1, 5, 3
  std::vector<double> f = frequencies(o, kLogits, 50000);
  double z = std::exp(2.0) + std::exp(1.5) + std::exp(1.0);
  for (size_t i = 0; i < kLogits.size(); ++i) {
    const bool kept = i == 1 || i == 5 || i == 3;
    EXPECT_NEAR(f[i], kept ? std::exp(kLogits[i]) / z : 0.0, kept ? 0.01 : 0.0) << i;
  }
  o.top_k = 0;
  o.top_p = 0.5;  // the most likely tokens until half the mass: 1 (0.33), then 5 (0.20)
  f = frequencies(o, kLogits, 50000);
  z = std::exp(2.0) + std::exp(1.5);
  for (size_t i = 0; i < kLogits.size(); ++i) {
    const bool kept = i == 1 || i == 5;
    EXPECT_NEAR(f[i], kept ? std::exp(kLogits[i]) / z : 0.0, kept ? 0.01 : 0.0) << i;
  }
}

TEST(Sampler, GreedyIsTheArgmaxAndASeedFixesTheDraws) {
  SamplingOptions o;
  const std::vector<float> tie = {1.0f, 3.0f, 3.0f, 0.0f};
  Sampler greedy(o);
  EXPECT_EQ(greedy.sample(tie.data(), 4), 1);
  o.temperature = 1.0;
  o.seed = 9;
  Sampler a(o), b(o);
  o.seed = 10;
  Sampler c(o);
  int differ = 0;
  for (int i = 0; i < 100; ++i) {
    const int32_t x = a.sample(kLogits.data(), 8);
    EXPECT_EQ(x, b.sample(kLogits.data(), 8));
    differ += x != c.sample(kLogits.data(), 8);
  }
  EXPECT_GT(differ, 10);
}

}  // namespace
}  // namespace bmojo
