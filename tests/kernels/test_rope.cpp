#include <gtest/gtest.h>

#include <cmath>

#include "kernels/rope.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

TEST(Rope, RotatesHalvesByPositionTimesFrequency) {
  const int Dh = 8, T = 5;
  RopeTable table(Dh, 10000.0f);
  table.ensure(T);
  auto x = test::random_vector(T * Dh, 1);
  auto y = x;
  rope_apply(y.data(), Dh, 1, T, 1, 0, table, false);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < Dh / 2; ++i) {
      const double a = t * std::pow(10000.0, -2.0 * i / Dh);
      const double x1 = x[t * Dh + i], x2 = x[t * Dh + i + Dh / 2];
      EXPECT_NEAR(y[t * Dh + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
      EXPECT_NEAR(y[t * Dh + i + Dh / 2], x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
    }
}

TEST(Rope, InverseUndoesForwardAndScoresDependOnRelativePosition) {
  const int Dh = 16, T = 9, H = 3, ld = H * Dh + 5;
  RopeTable table(Dh, 10000.0f);
  table.ensure(T + 40);
  auto x = test::random_vector(2 * T * ld, 2);
  auto y = x;
  rope_apply(y.data(), ld, 2, T, H, 0, table, false);
  rope_apply(y.data(), ld, 2, T, H, 0, table, true);
  EXPECT_LT(test::relative_error(y, x), 1e-5);
  // q at position p, k at position p - 3: their dot product is the same for any p.
  auto q = test::random_vector(Dh, 3), k = test::random_vector(Dh, 4);
  auto score = [&](int p) {
    auto qq = q, kk = k;
    rope_apply(qq.data(), Dh, 1, 1, 1, p, table, false);
    rope_apply(kk.data(), Dh, 1, 1, 1, p - 3, table, false);
    return test::dot(qq.data(), kk.data(), Dh);
  };
  EXPECT_NEAR(score(3), score(37), 1e-4);
}

}  // namespace
}  // namespace bmojo
