// The bf16 matmul path (core/blas.hpp): oneDNN with bf16 inputs and fp32 accumulation, for every
// transpose, stride, alpha and beta that matmul() accepts, against a double-precision reference; and a
// training run with it follows the fp32 loss curve.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/bf16.hpp"
#include "core/blas.hpp"
#include "core/cpu_features.hpp"
#include "kernels/linear.hpp"
#include "test_util.hpp"
#include "train/trainer.hpp"

namespace bmojo {
namespace {

// bf16 products need AVX-512 BF16; on CPUs without it these tests skip with the reason (the refusal itself
// is tested by Cli.Bf16MatmulWithoutTheCpuFeatureIsAClearError).
#define SKIP_WITHOUT_BF16()                                   \
  do {                                                        \
    const std::string why = bf16_matmul_unavailable_reason(); \
    if (!why.empty()) GTEST_SKIP() << why;                    \
  } while (0)

struct Bf16On {
  Bf16On() { set_matmul_bf16(true); }
  ~Bf16On() { set_matmul_bf16(false); }
};

float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// The rounding definition on the cases that matter: exact values, ties to even both ways, carry into the
// exponent, overflow to infinity, infinities and NaN.
TEST(Bf16Convert, RoundToBf16IsNearestEven) {
  EXPECT_EQ(round_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(round_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(round_to_bf16(from_bits(0x3f808000u)), 0x3f80) << "tie, even below";
  EXPECT_EQ(round_to_bf16(from_bits(0x3f818000u)), 0x3f82) << "tie, odd below: rounds up";
  EXPECT_EQ(round_to_bf16(from_bits(0x3f808001u)), 0x3f81) << "above the tie";
  EXPECT_EQ(round_to_bf16(from_bits(0x3fffffffu)), 0x4000) << "carry into the exponent";
  EXPECT_EQ(round_to_bf16(std::numeric_limits<float>::max()), 0x7f80) << "overflows to infinity";
  EXPECT_EQ(round_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(round_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  const uint16_t nan = round_to_bf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0) << "NaN must stay NaN, not become infinity";
  EXPECT_NE(round_to_bf16(from_bits(0x7f800001u)) & 0x007f, 0) << "signalling NaN with low payload";
}

// The fast conversion against the definition: strided and dense, sizes that leave vector tails, large
// enough to thread, values of every magnitude (subnormals may be flushed to zero by the vector path).
TEST(Bf16Convert, FastConversionMatchesTheDefinition) {
  for (const auto& [rows, cols, ld] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {3, 47, 47}, {5, 33, 40}, {300, 257, 300}, {512, 256, 256}, {129, 17, 31}}) {
    std::vector<float> x(static_cast<size_t>(rows) * ld);
    uint32_t state = 12345;
    for (float& v : x) {
      state = state * 1664525u + 1013904223u;
      v = from_bits(state);  // every bit pattern: any sign, exponent and mantissa
    }
    x[0] = from_bits(0x3f818000u);
    std::vector<uint16_t> out(static_cast<size_t>(rows) * cols, 0xdead);
    convert_to_bf16(out.data(), x.data(), rows, cols, ld);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = x[static_cast<size_t>(r * ld + c)];
        const uint16_t got = out[static_cast<size_t>(r * cols + c)], want = round_to_bf16(v);
        if (std::isnan(v)) {
          if ((got & 0x7f80) != 0x7f80 || (got & 0x007f) == 0) ++mismatches;
        } else if (std::fpclassify(v) == FP_SUBNORMAL) {
          if (got != want && (got & 0x7fff) != 0) ++mismatches;
        } else if (got != want) {
          ++mismatches;
        }
      }
    EXPECT_EQ(mismatches, 0) << rows << "x" << cols << " ld " << ld;
  }
}

TEST(Bf16Matmul, MatchesReferenceForEveryLayout) {
  SKIP_WITHOUT_BF16();
  const int M = 70, N = 50, K = 40;
  const Bf16On on;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // oneDNN's bf16 brgemm kernels for every layout, never a reference fallback: the AVX-512 BF16 ones
      // ("brg:avx512_core_bf16"), or on CPUs with AMX tiles the AMX ones ("brg:avx512_core_amx_bf16").
      const std::string impl = bf16_matmul_impl(ta, tb, M, N, K);
      EXPECT_TRUE(impl.rfind("brg:avx512_core_bf16", 0) == 0 ||
                  impl.rfind("brg:avx512_core_amx_bf16", 0) == 0)
          << impl << " ta " << ta << " tb " << tb;
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
        const auto A = test::random_vector(static_cast<size_t>(ta ? K : M) * lda, 1);
        const auto B = test::random_vector(static_cast<size_t>(tb ? N : K) * ldb, 2);
        auto C = test::random_vector(static_cast<size_t>(M) * ldc, 3);
        const auto C0 = C;
        const float alpha = 0.75f;
        matmul(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
        double err = 0.0, mag = 0.0, err32 = 0.0;
        for (int i = 0; i < M; ++i)
          for (int j = 0; j < N; ++j) {
            double ref = 0.0;
            for (int k = 0; k < K; ++k)
              ref += static_cast<double>(ta ? A[k * lda + i] : A[i * lda + k]) *
                     (tb ? B[j * ldb + k] : B[k * ldb + j]);
            ref = alpha * ref + beta * C0[i * ldc + j];
            err = std::max(err, std::fabs(C[i * ldc + j] - ref));
            mag = std::max(mag, std::fabs(ref));
            err32 = std::max(err32, std::fabs(C[i * ldc + j] - ref) / (std::fabs(ref) + 1.0));
          }
        EXPECT_LT(err / mag, 2e-2) << "ta " << ta << " tb " << tb << " beta " << beta;
        EXPECT_GT(err / mag, 1e-5) << "bf16 rounding must show: the bf16 path was not taken";
        for (int i = 0; i < M; ++i)  // padding columns of C untouched
          for (int j = N; j < ldc; ++j) EXPECT_EQ(C[i * ldc + j], C0[i * ldc + j]);
      }
    }
}

// A linear layer's backward pass rounds its output gradient once for both products, and gets exactly what
// it gets with every operand rounded afresh.
TEST(Bf16Matmul, LinearBackwardRoundsTheOutputGradientOnce) {
  SKIP_WITHOUT_BF16();
  const Bf16On on;
  const int N = 96, in_dim = 64, out_dim = 80;
  const auto dout = test::random_vector(static_cast<size_t>(N) * out_dim, 1);
  const auto inp = test::random_vector(static_cast<size_t>(N) * in_dim, 2);
  const auto weight = test::random_vector(static_cast<size_t>(in_dim) * out_dim, 3);
  std::vector<float> dinp(static_cast<size_t>(N) * in_dim), dweight(static_cast<size_t>(in_dim) * out_dim);
  const int64_t before = bf16_conversions();
  linear_backward(dinp.data(), in_dim, dweight.data(), out_dim, dout.data(), out_dim, inp.data(), in_dim,
                  weight.data(), N, in_dim, out_dim, false);
  EXPECT_EQ(bf16_conversions() - before, 3) << "dout, weight, inp: dout once";

  std::vector<float> dinp2(dinp.size()), dweight2(dweight.size(), 0.0f);
  matmul(false, true, N, in_dim, out_dim, 1.0f, dout.data(), out_dim, weight.data(), out_dim, 0.0f,
         dinp2.data(), in_dim);
  matmul(true, false, in_dim, out_dim, N, 1.0f, inp.data(), in_dim, dout.data(), out_dim, 1.0f,
         dweight2.data(), out_dim);
  EXPECT_EQ(dinp, dinp2);
  EXPECT_EQ(dweight, dweight2);
}

// Reuse never outlives its scope: an operand rewritten in place after the scope is rounded again.
TEST(Bf16Matmul, ReuseEndsWithItsScope) {
  SKIP_WITHOUT_BF16();
  const Bf16On on;
  const int M = 48, N = 40, K = 36;
  auto A = test::random_vector(static_cast<size_t>(M) * K, 1);
  const auto B = test::random_vector(static_cast<size_t>(K) * N, 2);
  std::vector<float> C1(static_cast<size_t>(M) * N), C2(C1.size()), C3(C1.size());
  {
    const Bf16OperandReuse reuse;
    matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C1.data(), N);
    const int64_t before = bf16_conversions();
    matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C2.data(), N);
    EXPECT_EQ(bf16_conversions(), before) << "both operands reused inside the scope";
    EXPECT_EQ(C1, C2);
  }
  for (float& a : A) a = -a;
  {
    const Bf16OperandReuse reuse;
    matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C3.data(), N);
  }
  for (size_t i = 0; i < C1.size(); ++i) ASSERT_EQ(C3[i], -C1[i]) << i;
}

TEST(Bf16Matmul, TrainingLossFollowsFp32) {
  SKIP_WITHOUT_BF16();
  Config c;
  c.model.vocab_size = 512;
  c.model.d_model = 64;
  c.model.n_heads = 2;
  c.model.layers = "BA";
  c.model.window = 8;
  c.model.d_ff = 128;
  c.train.steps = 150;
  c.train.batch_size = 32;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 20;
  c.train.eval_every = 0;
  c.train.eval_batches = 4;
  c.data.seq_len = 32;
  c.data.num_kv_pairs = 2;
  Config b = c;
  b.train.bf16_matmul = true;
  const TrainSummary fp32 = Trainer(c, TrainOptions{}).run();
  const TrainSummary bf16 = Trainer(b, TrainOptions{}).run();
  EXPECT_FALSE(matmul_bf16()) << "a run restores the precision it found";
  EXPECT_LT(fp32.eval.loss, std::log(512.0) - 1.0) << "the fp32 run learns";
  EXPECT_NEAR(bf16.eval.loss, fp32.eval.loss, 0.05 * fp32.eval.loss + 0.05);
  EXPECT_NE(bf16.train_loss, fp32.train_loss) << "the bf16 run took the bf16 path";
}

}  // namespace
}  // namespace bmojo
