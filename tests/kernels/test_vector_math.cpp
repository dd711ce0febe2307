#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/vector_math.hpp"

namespace bmojo {
namespace {

TEST(FastExp, RelativeErrorWithinTwoUlpOverTheRange) {
  double worst = 0.0;
  float worst_x = 0.0f;
  for (float x = -87.0f; x <= 88.0f; x += 0.000731f) {
    const double exact = std::exp(static_cast<double>(x));
    const double err = std::fabs(fast_exp(x) - exact) / exact;
    if (err > worst) worst = err, worst_x = x;
  }
  EXPECT_LT(worst, 3e-7) << "at x = " << worst_x;
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
}

// NaN in, NaN out, and no undefined float-to-int conversion on the way (UBSan checks it); infinities clamp.
TEST(FastExp, NanAndInfinities) {
  EXPECT_TRUE(std::isnan(fast_exp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(fast_exp(-std::numeric_limits<float>::infinity()), fast_exp(-87.3f));
  EXPECT_EQ(fast_exp(std::numeric_limits<float>::infinity()), fast_exp(88.37f));
}

TEST(FastLog1p, RelativeErrorOverTheUnitInterval) {
  double worst = 0.0;
  float worst_u = 0.0f;
  for (float u : {0.0f, 1e-30f, 1e-12f, 1e-8f, 5.96e-8f, 1e-7f, 1e-5f, 0.41421354f, 0.41421357f, 1.0f}) {
    const double exact = std::log1p(static_cast<double>(u));
    const double err =
        u == 0.0f ? std::fabs(fast_log1p_unit(u)) : std::fabs(fast_log1p_unit(u) - exact) / exact;
    if (err > worst) worst = err, worst_u = u;
  }
  for (float u = 1e-6f; u <= 1.0f; u += 0.0000731f) {
    const double exact = std::log1p(static_cast<double>(u));
    const double err = std::fabs(fast_log1p_unit(u) - exact) / exact;
    if (err > worst) worst = err, worst_u = u;
  }
  EXPECT_LT(worst, 1e-6) << "at u = " << worst_u;
}

TEST(FastSoftplus, MatchesTheDefinitionAcrossTheRange) {
  double worst = 0.0;
  float worst_v = 0.0f;
  for (float v = -80.0f; v <= 80.0f; v += 0.00317f) {
    const double exact = std::log1p(std::exp(static_cast<double>(v)));
    const double err = std::fabs(fast_softplus(v) - exact) / exact;
    if (err > worst) worst = err, worst_v = v;
  }
  EXPECT_LT(worst, 2e-6) << "at v = " << worst_v;
  EXPECT_EQ(fast_softplus(1000.0f), 1000.0f) << "large inputs pass through";
  EXPECT_GT(fast_softplus(-1000.0f), 0.0f) << "stays positive (a step size)";
  EXPECT_TRUE(std::isfinite(fast_softplus(-1000.0f)));
}

TEST(FastSoftplus, VectorisedLoopAgreesWithScalar) {
  std::vector<float> v(1000), out(v.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = -30.0f + 0.06f * static_cast<float>(i);
#pragma omp simd
  for (size_t i = 0; i < v.size(); ++i) out[i] = fast_softplus(v[i]);
  for (size_t i = 0; i < v.size(); ++i)
    EXPECT_NEAR(out[i], fast_softplus(v[i]), 1e-6f * (1.0f + out[i])) << v[i];
}

TEST(FastExp, ClampsInsteadOfOverflowing) {
  EXPECT_GT(fast_exp(-1000.0f), 0.0f);
  EXPECT_LT(fast_exp(-1000.0f), 1e-37f);
  EXPECT_TRUE(std::isfinite(fast_exp(1000.0f)));
}

TEST(FastExp, VectorisedLoopAgreesWithScalar) {
  float in[64], out[64];
  for (int i = 0; i < 64; ++i) in[i] = -20.0f + 0.6f * i;
#pragma omp simd
  for (int i = 0; i < 64; ++i) out[i] = fast_exp(in[i]);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], fast_exp(in[i]));
}

}  // namespace
}  // namespace bmojo

#ifdef BMOJO_WIDE_VEC
namespace bmojo {
namespace {

// The build's widest vector (16 lanes with AVX-512, 8 with AVX2; CI tests both paths, scripts/test.sh).
constexpr int kL = WideVec::kLanes;

TEST(FastExp, WideVersionMatchesScalar) {
  float in[kL], out[kL];
  for (float start = -90.0f; start < 90.0f; start += 1.37f) {
    for (int i = 0; i < kL; ++i) in[i] = start + 0.0913f * i;
    WideVec::store(out, fast_exp_wide(WideVec::load(in)));
    for (int i = 0; i < kL; ++i) EXPECT_NEAR(out[i], fast_exp(in[i]), 3e-7 * fast_exp(in[i])) << in[i];
  }
}

TEST(SumLanes, EachLaneIsTheSumOfOneVector) {
  float in[kL][kL];
  for (int i = 0; i < kL; ++i)
    for (int j = 0; j < kL; ++j)
      in[i][j] = static_cast<float>((i + 1) * 100 + j * j) * (j % 3 == 0 ? -1.0f : 1.0f);
  WideVec::V v[kL];
  for (int i = 0; i < kL; ++i) v[i] = WideVec::load(in[i]);
  float out[kL];
  WideVec::store(out, WideVec::sum_lanes(v));
  for (int i = 0; i < kL; ++i) {
    double want = 0.0;
    for (int j = 0; j < kL; ++j) want += in[i][j];
    EXPECT_EQ(out[i], static_cast<float>(want)) << "lane " << i;  // integers: exact in any order
    EXPECT_EQ(WideVec::reduce_add(v[i]), static_cast<float>(want)) << "lane " << i;
  }
}

}  // namespace
}  // namespace bmojo
#endif

namespace bmojo {
namespace {

// Every length around the 16-lane blocks, with masked (-inf) entries at the ends and inside.
TEST(SoftmaxRowHelpers, MatchPlainLoopsForEveryLength) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int n = 1; n <= 70; ++n) {
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) x[i] = std::sin(1.7f * i + n) * 6.0f;
    if (n > 3) x[0] = x[n - 1] = x[n / 2] = ninf;
    float m = ninf;
    int arg = 0;
    for (int i = 0; i < n; ++i)
      if (x[i] > m) m = x[i], arg = i;
    EXPECT_EQ(max_of(x.data(), n), m) << n;
    EXPECT_EQ(argmax_of(x.data(), n), arg) << n;
    auto y = x;
    const float sum = exp_shifted(y.data(), n, m);
    double ref_sum = 0.0;
    for (int i = 0; i < n; ++i) {
      // x - m rounds in float first, as in the kernel
      const double ref = x[i] == ninf ? 0.0 : std::exp(static_cast<double>(x[i] - m));
      ref_sum += ref;
      if (x[i] == ninf) {
        EXPECT_EQ(y[i], 0.0f) << "masked entries must be exactly 0 (n " << n << ")";
      } else {
        EXPECT_NEAR(y[i], ref, 4e-7 * ref) << n << " " << i;
      }
    }
    EXPECT_NEAR(sum, ref_sum, 1e-6 * ref_sum) << n;
  }
}

TEST(SoftmaxRowHelpers, ArgmaxTakesTheFirstOfTies) {
  std::vector<float> x(40, 1.0f);
  x[17] = x[33] = 5.0f;
  EXPECT_EQ(argmax_of(x.data(), 40), 17);
  EXPECT_EQ(max_of(x.data(), 0), -std::numeric_limits<float>::infinity());
}

}  // namespace
}  // namespace bmojo
