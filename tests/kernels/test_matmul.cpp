// The fp32 matrix product (core/blas.hpp): for every transpose and leading dimension, large enough to take
// the split path (one slice of C per thread), against a double-precision reference, with 2 threads (split)
// and with 1 (one OpenBLAS call). The two need not agree bit for bit: OpenBLAS picks its small-matrix
// kernels by size, so a slice may be computed by a different kernel than the whole.
#include <gtest/gtest.h>

#include <cmath>

#include "core/blas.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

std::vector<float> product(bool ta, bool tb, int M, int N, int K, const std::vector<float>& A, int lda,
                           const std::vector<float>& B, int ldb, const std::vector<float>& C0, int ldc,
                           float beta) {
  auto C = C0;
  matmul(ta, tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  return C;
}

TEST(Matmul, SplitAcrossThreadsMatchesReference) {
  // (M, N, K): split along M, along N, and with a slice length that is not a multiple of 16.
  const int shapes[][3] = {{150, 90, 90}, {90, 203, 90}, {129, 129, 65}};
  for (const auto& sh : shapes) {
    const int M = sh[0], N = sh[1], K = sh[2];
    ASSERT_GE(static_cast<double>(M) * N * K, kSplitMinFlops) << "the shape must take the split path";
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, 0.5f}) {
          const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
          const auto A = test::random_vector(static_cast<size_t>(ta ? K : M) * lda, 1);
          const auto B = test::random_vector(static_cast<size_t>(tb ? N : K) * ldb, 2);
          const auto C0 = test::random_vector(static_cast<size_t>(M) * ldc, 3);
          std::vector<float> two, one;
          {
            const test::Threads t(2);
            two = product(ta, tb, M, N, K, A, lda, B, ldb, C0, ldc, beta);
          }
          {
            const test::Threads t(1);
            one = product(ta, tb, M, N, K, A, lda, B, ldb, C0, ldc, beta);
          }
          double worst = 0.0;
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < ldc; ++j) {
              if (j >= N) {  // padding columns untouched
                ASSERT_EQ(two[i * ldc + j], C0[i * ldc + j]);
                continue;
              }
              double ref = 0.0;
              for (int k = 0; k < K; ++k)
                ref += static_cast<double>(ta ? A[k * lda + i] : A[i * lda + k]) *
                       (tb ? B[j * ldb + k] : B[k * ldb + j]);
              ref = 0.75 * ref + beta * C0[i * ldc + j];
              worst = std::max(worst, std::fabs(two[i * ldc + j] - ref) / (std::fabs(ref) + 1.0));
              worst = std::max(worst, std::fabs(one[i * ldc + j] - ref) / (std::fabs(ref) + 1.0));
            }
          EXPECT_LT(worst, 1e-5) << "M " << M << " N " << N << " ta " << ta << " tb " << tb;
        }
  }
}

// Called from a one-thread team (where omp_in_parallel() is false, so the split path is taken) the nested
// region may get fewer threads than asked for: every slice must still be computed.
TEST(Matmul, SplitInsideAOneThreadTeamComputesEverySlice) {
  const test::Threads t(2);
  const int M = 160, N = 96, K = 80;
  const auto A = test::random_vector(static_cast<size_t>(M) * K, 4);
  const auto B = test::random_vector(static_cast<size_t>(K) * N, 5);
  std::vector<float> C(static_cast<size_t>(M) * N, 0.0f);
#pragma omp parallel num_threads(1)
  matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double ref = 0.0;
      for (int k = 0; k < K; ++k) ref += static_cast<double>(A[i * K + k]) * B[k * N + j];
      ASSERT_NEAR(C[i * N + j], ref, 1e-4 * (std::fabs(ref) + 1.0)) << i << "," << j;
    }
}

}  // namespace
}  // namespace bmojo
