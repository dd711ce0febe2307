// Products with a packed B (kernels/packed_matmul.hpp) against the double-precision reference on the
// unpacked matrix: every row count up to 17 (each register-tile remainder) and some up to kPackedMaxRows,
// column counts off the panel width (the padded last panel), both layouts of B, beta 0 and not, padded
// leading dimensions, one thread and two; matmul() reads the packed copy exactly inside a UsePackedWeights
// scope, for the row counts it is meant for; and a model's packed copy follows its weights.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/blas.hpp"
#include "kernels/packed_matmul.hpp"
#include "kernels/skinny_matmul.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

// Error relative to the size of the terms summed (K products of unit-variance numbers: about sqrt(K)).
double worst_error(const float* got, const float* want, int M, int N, int ld, int K) {
  double worst = 0.0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      const double g = got[i * ld + j], w = want[i * ld + j];
      worst = std::max(worst, std::fabs(g - w) / (std::fabs(w) + std::sqrt(static_cast<double>(K))));
    }
  return worst;
}

TEST(PackedMatmul, MatchesReferenceForRaggedShapes) {
  // (N, K): one partial panel, exact panels, panels plus a ragged tail, and one split across two threads;
  // K below, at and past the kernel's 64-row chunks; M past the rows of one call's accumulators.
  const int shapes[][2] = {{1, 1}, {17, 5}, {48, 33}, {96, 64}, {133, 67}, {1100, 301}};
  std::vector<int> row_counts;
  for (int M = 1; M <= 17; ++M) row_counts.push_back(M);
  for (int M : {31, 50, kPackedMaxRows, kPackedMaxRows + 36}) row_counts.push_back(M);
  for (int threads : {1, 2}) {
    const test::Threads t(threads);
    for (const auto& sh : shapes)
      for (int M : row_counts)
        for (bool tb : {false, true})
          for (float beta : {0.0f, 0.5f}) {
            const int N = sh[0], K = sh[1], lda = K + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
            const auto A = test::random_vector(static_cast<size_t>(M) * lda, 1);
            const auto B = test::random_vector(static_cast<size_t>(tb ? N : K) * ldb, 2);
            const PackedMatrix packed(B.data(), tb, N, K, ldb);
            ASSERT_EQ(packed.panels(), (N + PackedMatrix::kPanelColumns - 1) / PackedMatrix::kPanelColumns);
            auto C0 = test::random_vector(static_cast<size_t>(M) * ldc, 3);
            // With beta 0, C's old values must not be read: NaN there must not leak into the result.
            if (beta == 0.0f)
              for (float& c : C0) c = std::numeric_limits<float>::quiet_NaN();
            auto fast = C0, ref = C0, on_packed = C0;
            packed_matmul(M, 0.75f, A.data(), lda, packed, beta, fast.data(), ldc);
            skinny_matmul_reference(tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, ref.data(), ldc);
            packed_matmul_reference(M, 0.75f, A.data(), lda, packed, beta, on_packed.data(), ldc);
            for (int i = 0; i < M; ++i)
              for (int j = N; j < ldc; ++j)  // padding columns untouched
                ASSERT_TRUE(std::isnan(fast[i * ldc + j]) || fast[i * ldc + j] == C0[i * ldc + j]);
            const auto where = [&] {
              return "M " + std::to_string(M) + " N " + std::to_string(N) + " K " + std::to_string(K) +
                     " tb " + std::to_string(tb) + " beta " + std::to_string(beta) + " threads " +
                     std::to_string(threads);
            };
            EXPECT_LT(worst_error(fast.data(), ref.data(), M, N, ldc, K), 4e-6) << where();
            EXPECT_LT(worst_error(on_packed.data(), ref.data(), M, N, ldc, K), 1e-12) << where();
          }
  }
}

TEST(PackedMatmul, MatmulReadsThePackedCopyOnlyInsideItsScopeAndForItsRowCounts) {
  const int N = 200, K = 96;
  auto B = test::random_vector(static_cast<size_t>(K) * N, 5);
  PackedWeights weights;
  weights.add(B.data(), false, N, K, N);
  weights.add(B.data(), false, N, K, N);  // the same matrix twice: kept once
  ASSERT_EQ(weights.size(), 1u);
  ASSERT_NE(weights.find(B.data(), false, N, K, N), nullptr);
  EXPECT_EQ(weights.find(B.data(), true, N, K, N), nullptr);
  EXPECT_EQ(weights.find(B.data(), false, N - 1, K, N), nullptr);
  const auto packed_B = B;
  // Change B after packing (breaking the scope's promise on purpose): a product that reads the packed copy
  // gives the old B's result, one that reads B the new one.
  for (float& b : B) b = -b;
  const auto read_packed = [&](int M) {
    const auto A = test::random_vector(static_cast<size_t>(M) * K, 6);
    std::vector<float> C(static_cast<size_t>(M) * N), old(C.size());
    matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
    skinny_matmul_reference(false, M, N, K, 1.0f, A.data(), K, packed_B.data(), N, 0.0f, old.data(), N);
    return worst_error(C.data(), old.data(), M, N, N, K) < 1e-5;
  };
  EXPECT_FALSE(read_packed(8)) << "outside a scope";
  {
    const UsePackedWeights use(&weights);
    EXPECT_TRUE(read_packed(kPackedMinRows));
    EXPECT_TRUE(read_packed(8));
    EXPECT_TRUE(read_packed(kPackedMaxRows));
    EXPECT_FALSE(read_packed(kPackedMinRows - 1)) << "below the packed row counts";
    EXPECT_FALSE(read_packed(kPackedMaxRows + 1)) << "above them";
    {
      const UsePackedWeights off(nullptr);
      EXPECT_FALSE(read_packed(8)) << "turned off in a nested scope";
    }
    EXPECT_TRUE(read_packed(8)) << "back on when the nested scope ends";
  }
  EXPECT_FALSE(read_packed(8)) << "after the scope";
}

TEST(PackedMatmul, AModelsPackedWeightsFollowItsWeights) {
  ModelConfig cfg;
  cfg.layers = "BM";
  cfg.d_model = 32;
  cfg.n_heads = 2;
  cfg.window = 4;
  cfg.vocab_size = 50;
  cfg.d_ff = 40;
  Model m(cfg);
  test::randomize_model(m, 3);
  const auto packed = m.packed_weights();
  ASSERT_NE(packed, nullptr);
  EXPECT_EQ(m.packed_weights(), packed) << "built once";
  // Every weight matrix a step multiplies by: the head (transposed) and each projection.
  const ModelWeights& w = m.weights();
  EXPECT_NE(packed->find(w.lm_head, true, cfg.vocab_size, cfg.d_model, cfg.d_model), nullptr);
  EXPECT_NE(packed->find(w.layers[1].mlp.w_in, false, 2 * cfg.d_ff, cfg.d_model, 2 * cfg.d_ff), nullptr);
  EXPECT_NE(packed->find(w.layers[0].bmojo.innovation, false, cfg.d_model, cfg.d_model, cfg.d_model),
            nullptr);
  // Layer 0 (B, tied fading projections) multiplies by the [Wk | Wv] columns of its W_qkv in place.
  const int Dh = cfg.d_model / cfg.n_heads, qd = cfg.n_heads * Dh, kvd = cfg.kv_heads() * Dh;
  EXPECT_NE(packed->find(w.layers[0].attn.wqkv + qd, false, 2 * kvd, cfg.d_model, qd + 2 * kvd), nullptr);
  const PackedMatrix* head = packed->find(w.lm_head, true, cfg.vocab_size, cfg.d_model, cfg.d_model);
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->panel(0)[1], w.lm_head[cfg.d_model]) << "column 1 of the head's transpose is row 1";
  // Reaching the weights for writing drops the copy; the next one holds the new values.
  m.params()[m.layout().find(m.config().tie_embeddings ? "embedding" : "lm_head").offset + cfg.d_model] =
      7.0f;
  const auto again = m.packed_weights();
  ASSERT_NE(again, nullptr);
  EXPECT_NE(again, packed);
  EXPECT_EQ(again->find(w.lm_head, true, cfg.vocab_size, cfg.d_model, cfg.d_model)->panel(0)[1], 7.0f);
  EXPECT_NE(packed->find(w.lm_head, true, cfg.vocab_size, cfg.d_model, cfg.d_model)->panel(0)[1], 7.0f)
      << "a copy still in use by a step stays as it was";
  m.set_packed_decode(false);
  EXPECT_EQ(m.packed_weights(), nullptr);
}

}  // namespace
}  // namespace bmojo
