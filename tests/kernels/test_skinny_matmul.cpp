// The few-row matrix products (kernels/skinny_matmul.hpp) against their double-precision reference: every
// row count up to kSkinnyMaxRows (each register-tile remainder), column counts off the vector width, row
// counts of B off the 4-row blocks, both layouts of B, beta 0 and not, padded leading dimensions, on one
// thread and on two (the split over B's rows and the sum of the partials); and matmul() sends such products
// there with the same result.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/blas.hpp"
#include "kernels/skinny_matmul.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

// Error relative to the size of the terms summed (K products of unit-variance numbers: about sqrt(K)).
double worst_error(const std::vector<float>& got, const std::vector<float>& want, int K) {
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]) /
                                (std::fabs(want[i]) + std::sqrt(static_cast<double>(K))));
  return worst;
}

TEST(SkinnyMatmul, MatchesReferenceForRaggedShapes) {
  // (N, K): small, off every block size, one large enough to be split across two threads, and one wider
  // than the block of columns whose partial sums stay in cache for 4 rows (2048 columns).
  const int shapes[][2] = {{1, 1}, {17, 5}, {37, 67}, {300, 130}, {1100, 301}, {2700, 45}};
  for (int threads : {1, 2}) {
    const test::Threads t(threads);
    for (const auto& sh : shapes)
      for (int M = 1; M <= kSkinnyMaxRows; M += (M < 9 ? 1 : 7))
        for (bool tb : {false, true})
          for (float beta : {0.0f, 0.5f}) {
            const int N = sh[0], K = sh[1], lda = K + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
            const auto A = test::random_vector(static_cast<size_t>(M) * lda, 1);
            const auto B = test::random_vector(static_cast<size_t>(tb ? N : K) * ldb, 2);
            auto C0 = test::random_vector(static_cast<size_t>(M) * ldc, 3);
            // With beta 0, C's old values must not be read: NaN there must not leak into the result.
            if (beta == 0.0f)
              for (float& c : C0) c = std::numeric_limits<float>::quiet_NaN();
            auto fast = C0, ref = C0;
            skinny_matmul(tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, fast.data(), ldc);
            skinny_matmul_reference(tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, ref.data(), ldc);
            for (int i = 0; i < M; ++i)
              for (int j = N; j < ldc; ++j)  // padding columns untouched
                ASSERT_TRUE(std::isnan(fast[i * ldc + j]) || fast[i * ldc + j] == C0[i * ldc + j]);
            std::vector<float> f, r;
            for (int i = 0; i < M; ++i)
              for (int j = 0; j < N; ++j) {
                f.push_back(fast[i * ldc + j]);
                r.push_back(ref[i * ldc + j]);
              }
            EXPECT_LT(worst_error(f, r, K), 4e-6) << "M " << M << " N " << N << " K " << K << " tb " << tb
                                                  << " beta " << beta << " threads " << threads;
          }
  }
}

TEST(SkinnyMatmul, MatmulUsesItForFewRowsWithTheSameResult) {
  const int M = 3, N = 512, K = 256;
  ASSERT_TRUE(skinny_matmul_worth(false, M, N, K));
  ASSERT_FALSE(skinny_matmul_worth(true, M, N, K));
  ASSERT_FALSE(skinny_matmul_worth(false, kSkinnyMaxRows + 1, N, K));
  const auto A = test::random_vector(static_cast<size_t>(M) * K, 4);
  const auto B = test::random_vector(static_cast<size_t>(K) * N, 5);
  std::vector<float> got(static_cast<size_t>(M) * N), want(got.size());
  matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, got.data(), N);
  skinny_matmul_reference(false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, want.data(), N);
  EXPECT_LT(worst_error(got, want, K), 4e-6);
}

}  // namespace
}  // namespace bmojo
