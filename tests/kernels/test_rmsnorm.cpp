#include <gtest/gtest.h>

#include <cmath>

#include "kernels/rmsnorm.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

TEST(RmsNorm, ForwardMatchesDefinition) {
  const int N = 5, D = 24;
  auto x = test::random_vector(N * D, 1);
  auto w = test::random_vector(D, 2);
  std::vector<float> out(N * D), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, D, 1e-5f);
  for (int i = 0; i < N; ++i) {
    double ss = 0;
    for (int c = 0; c < D; ++c) ss += x[i * D + c] * x[i * D + c];
    const double r = 1.0 / std::sqrt(ss / D + 1e-5);
    for (int c = 0; c < D; ++c) EXPECT_NEAR(out[i * D + c], x[i * D + c] * r * w[c], 1e-5);
  }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int N = 7, D = 19;
  auto x = test::random_vector(N * D, 3);
  auto w = test::random_vector(D, 4);
  auto r = test::random_vector(N * D, 5);
  std::vector<float> out(N * D), rstd(N), dx(N * D, 0.0f), dw(D, 0.0f);
  auto f = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, D, 1e-5f);
    return test::dot(out.data(), r.data(), out.size());
  };
  f();
  rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, D);
  test::expect_gradient(f, x.data(), dx.data(), x.size(), "dx", 60);
  test::expect_gradient(f, w.data(), dw.data(), w.size(), "dweight", 19);
}

}  // namespace
}  // namespace bmojo
