// OpenMP helpers (core/parallel.hpp): an exception thrown inside a parallel region comes out of it as the
// same exception, after every thread has left the region, instead of ending the program.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <new>
#include <stdexcept>

#include "core/blas.hpp"
#include "core/parallel.hpp"

namespace bmojo {
namespace {

TEST(ParallelErrors, AnExceptionInARegionIsRethrownAfterIt) {
  set_num_threads(2);
  ParallelErrors errors;
  std::atomic<int> done{0};
#pragma omp parallel for schedule(static)
  for (int i = 0; i < 64; ++i)
    errors.guard([&] {
      if (i == 37) throw std::runtime_error("iteration 37 failed");
      ++done;
    });
  EXPECT_GT(done.load(), 0);
  try {
    errors.rethrow();
    ADD_FAILURE() << "the exception was lost";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "iteration 37 failed");
  }
}

TEST(ParallelErrors, WorkAfterAFailureIsSkippedAndBarriersStillMeet) {
  set_num_threads(2);
  ParallelErrors errors;
  std::atomic<int> after{0};
#pragma omp parallel
  {
    errors.guard([&] { throw std::bad_alloc(); });
#pragma omp barrier
    errors.guard([&] { ++after; });
  }
  EXPECT_EQ(after.load(), 0);
  EXPECT_THROW(errors.rethrow(), std::bad_alloc);
}

TEST(ParallelErrors, NothingToRethrowWhenNothingFailed) {
  ParallelErrors errors;
#pragma omp parallel for
  for (int i = 0; i < 8; ++i) errors.guard([] {});
  EXPECT_NO_THROW(errors.rethrow());
}

}  // namespace
}  // namespace bmojo
