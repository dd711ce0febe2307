#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cross_entropy.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

TEST(CrossEntropy, LossAccuracyAndGradient) {
  const int N = 4, V = 13;
  auto logits = test::random_vector(N * V, 1, 3.0f);
  const int32_t targets[N] = {0, 5, 12, 7};
  double expect = 0.0;
  int64_t correct = 0;
  for (int i = 0; i < N; ++i) {
    double sum = 0.0;
    int arg = 0;
    for (int c = 0; c < V; ++c) {
      sum += std::exp(logits[i * V + c]);
      if (logits[i * V + c] > logits[i * V + arg]) arg = c;
    }
    expect += std::log(sum) - logits[i * V + targets[i]];
    correct += arg == targets[i];
  }
  auto work = logits;
  const auto r = cross_entropy_forward_backward(work.data(), targets, N, V, 1.0f / N, true);
  EXPECT_NEAR(r.loss_sum, expect, 1e-4);
  EXPECT_EQ(r.correct, correct);
  auto f = [&] {
    auto tmp = logits;
    return cross_entropy_forward_backward(tmp.data(), targets, N, V, 1.0f, false).loss_sum / N;
  };
  test::expect_gradient(f, logits.data(), work.data(), logits.size(), "dlogits", 52);
}

}  // namespace
}  // namespace bmojo
