// The step profiler behind `bmojo bench --profile` and the measured fp32 peak it is quoted against.
#include <gtest/gtest.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "core/machine_peak.hpp"
#include "core/profile.hpp"

namespace bmojo {
namespace {

// Busy-waits (sleeping can overshoot by a scheduler tick on a loaded machine).
void spin_for(double ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double, std::milli>(ms);
  while (std::chrono::steady_clock::now() < end) {
  }
}

const profile::Entry* find(const std::vector<profile::Entry>& entries, const std::string& name) {
  for (const profile::Entry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

class Profile : public ::testing::Test {
 protected:
  void SetUp() override {
    profile::reset();
    profile::set_enabled(true);
  }
  void TearDown() override {
    profile::set_enabled(false);
    profile::reset();
  }
};

TEST_F(Profile, NestedScopesCountExclusiveTime) {
  const auto t0 = std::chrono::steady_clock::now();
  {
    const profile::Scope outer("outer");
    spin_for(20);
    {
      const profile::Scope inner("inner", 1000.0);
      spin_for(40);
    }
    spin_for(10);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto entries = profile::totals();
  const profile::Entry* outer = find(entries, "outer");
  const profile::Entry* inner = find(entries, "inner");
  ASSERT_NE(outer, nullptr);
  ASSERT_NE(inner, nullptr);
  // The inner 40 ms belong to "inner" only: inclusive accounting would give "outer" all of the block's
  // time, exclusive gives it the block's time less the inner scope's. Bounds from below and by the total,
  // not from above: a descheduled thread (a loaded CI machine) stretches any of the spins.
  EXPECT_GE(inner->seconds, 0.040 - 1e-4);
  EXPECT_GE(outer->seconds, 0.030 - 1e-4);
  EXPECT_NEAR(outer->seconds + inner->seconds, total, 0.002);
  EXPECT_LT(outer->seconds, total - 0.040 + 0.002);
  EXPECT_EQ(outer->calls, 1);
  EXPECT_EQ(inner->calls, 1);
  EXPECT_EQ(inner->flops, 1000.0);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_GE(entries[0].seconds, entries[1].seconds) << "largest time first";
}

TEST_F(Profile, RepeatedScopesAccumulateUnderOneName) {
  for (int i = 0; i < 3; ++i) {
    const profile::Scope s("kernel", 10.0);
    spin_for(2);
  }
  const auto entries = profile::totals();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].calls, 3);
  EXPECT_EQ(entries[0].flops, 30.0);
  EXPECT_GE(entries[0].seconds, 0.006);
}

TEST_F(Profile, RecordsNothingWhenOffOrInsideAParallelRegion) {
  profile::set_enabled(false);
  { const profile::Scope s("off"); }
  profile::set_enabled(true);
#pragma omp parallel num_threads(2)
  { const profile::Scope s("in_parallel"); }
  EXPECT_TRUE(profile::totals().empty());
  profile::reset();
  { const profile::Scope s("after_reset"); }
  ASSERT_EQ(profile::totals().size(), 1u);
  EXPECT_EQ(profile::totals()[0].name, "after_reset");
}

TEST(MachinePeak, MeasuresAPositiveRateOnEveryThreadAsked) {
  const PeakMeasurement one = measure_fp32_peak(1, 0.05);
  EXPECT_TRUE(std::isfinite(one.gflops));
  EXPECT_GT(one.gflops, 0.1);
  EXPECT_EQ(one.threads, 1);
  EXPECT_TRUE(one.isa == "avx512" || one.isa == "avx2" || one.isa == "128-bit") << one.isa;
  const PeakMeasurement two = measure_fp32_peak(2, 0.05);
  EXPECT_EQ(two.threads, 2);
  EXPECT_GT(two.gflops, 0.1);
}

// The nominal peak's clock is a real core clock (0.5 to 7 GHz: every x86 core sold runs in that range), and
// the peak follows from it. A chain of add-immediates, which Golden Cove folds at rename, read 19.6 GHz.
TEST(MachinePeak, NominalPeakUsesAPlausibleClock) {
  const NominalPeak p = nominal_fp32_peak(2);
  EXPECT_GT(p.ghz, 0.5) << p.basis();
  EXPECT_LT(p.ghz, 7.0) << p.basis();
  EXPECT_GT(p.fma_per_cycle, 0);
  EXPECT_NEAR(p.gflops, p.cores * p.fma_per_cycle * 2.0 * p.ghz, 1e-6 * p.gflops);
}

}  // namespace
}  // namespace bmojo
