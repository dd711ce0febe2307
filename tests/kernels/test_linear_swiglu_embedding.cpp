#include <gtest/gtest.h>

#include <cmath>

#include "kernels/embedding.hpp"
#include "kernels/linear.hpp"
#include "kernels/swiglu.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

TEST(Linear, BlasMatchesReference) {
  const int N = 37, in = 29, out = 41;
  auto x = test::random_vector(N * in, 1);
  auto w = test::random_vector(in * out, 2);
  auto dy = test::random_vector(N * out, 3);
  std::vector<float> y(N * out), y_ref(N * out);
  linear_forward(y.data(), out, x.data(), in, w.data(), out, N, in, out);
  linear_forward_reference(y_ref.data(), x.data(), w.data(), N, in, out);
  EXPECT_LT(test::relative_error(y, y_ref), 1e-5);
  std::vector<float> dx(N * in), dx_ref(N * in), dw(in * out, 0.5f), dw_ref(in * out, 0.5f);
  linear_backward(dx.data(), in, dw.data(), out, dy.data(), out, x.data(), in, w.data(), N, in, out, false);
  linear_backward_reference(dx_ref.data(), dw_ref.data(), dy.data(), x.data(), w.data(), N, in, out);
  EXPECT_LT(test::relative_error(dx, dx_ref), 1e-5);
  EXPECT_LT(test::relative_error(dw, dw_ref), 1e-5);  // both accumulated onto 0.5
}

TEST(Linear, StridedRowsAndAccumulation) {
  // Input columns [2, 2+in) of rows of width 10; output accumulated into columns [1, 1+out) of width 9.
  const int N = 6, in = 5, out = 4, ldi = 10, ldo = 9;
  auto xs = test::random_vector(N * ldi, 4);
  auto w = test::random_vector(in * out, 5);
  auto base = test::random_vector(N * ldo, 6);
  std::vector<float> y = base;
  linear_forward(y.data() + 1, ldo, xs.data() + 2, ldi, w.data(), out, N, in, out, 1.0f);
  for (int i = 0; i < N; ++i)
    for (int o = 0; o < out; ++o) {
      double acc = base[i * ldo + 1 + o];
      for (int c = 0; c < in; ++c) acc += xs[i * ldi + 2 + c] * w[c * out + o];
      EXPECT_NEAR(y[i * ldo + 1 + o], acc, 1e-5);
    }
}

TEST(SwiGlu, BackwardMatchesFiniteDifferences) {
  const int N = 6, F = 11;
  auto gu = test::random_vector(N * 2 * F, 7, 2.0f);
  auto r = test::random_vector(N * F, 8);
  std::vector<float> act(N * F), dgu(N * 2 * F);
  auto f = [&] {
    swiglu_forward(act.data(), gu.data(), N, F);
    return test::dot(act.data(), r.data(), act.size());
  };
  f();
  for (int i = 0; i < N * F; ++i) {
    const int row = i / F, c = i % F;
    const float g = gu[row * 2 * F + c], u = gu[row * 2 * F + F + c];
    EXPECT_NEAR(act[i], g / (1.0f + std::exp(-g)) * u, 1e-5);
  }
  swiglu_backward(dgu.data(), r.data(), gu.data(), N, F);
  test::expect_gradient(f, gu.data(), dgu.data(), gu.size(), "dgate_up", 80);
}

TEST(Embedding, BackwardSumsRepeatedTokens) {
  const int V = 5, D = 3, N = 6;
  const int32_t tokens[N] = {1, 3, 1, 0, 1, 4};
  auto table = test::random_vector(V * D, 9);
  auto dout = test::random_vector(N * D, 10);
  std::vector<float> out(N * D), dtable(V * D, 0.0f), expect(V * D, 0.0f);
  embedding_forward(out.data(), tokens, table.data(), N, D);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) EXPECT_EQ(out[i * D + c], table[tokens[i] * D + c]);
  embedding_backward(dtable.data(), dout.data(), tokens, N, D);
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < D; ++c) expect[tokens[i] * D + c] += dout[i * D + c];
  EXPECT_LT(test::relative_error(dtable, expect), 1e-6);
}

}  // namespace
}  // namespace bmojo
