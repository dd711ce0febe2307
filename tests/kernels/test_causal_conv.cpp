#include <gtest/gtest.h>

#include "kernels/causal_conv.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

TEST(CausalConv, ForwardIsCausalWithLeftZeroPadding) {
  const int B = 1, T = 6, C = 2, K = 4;
  std::vector<float> x(T * C), w(C * K), bias = {0.5f, -1.0f}, out(T * C);
  for (int i = 0; i < T * C; ++i) x[i] = static_cast<float>(i + 1);
  for (int i = 0; i < C * K; ++i) w[i] = 0.1f * (i + 1);
  causal_conv_forward(out.data(), x.data(), C, w.data(), bias.data(), B, T, C, K);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      double e = bias[c];
      for (int k = 0; k < K; ++k) {
        const int s = t - (K - 1) + k;
        if (s >= 0) e += w[c * K + k] * x[s * C + c];
      }
      EXPECT_NEAR(out[t * C + c], e, 1e-5);
    }
}

TEST(CausalConv, BackwardMatchesFiniteDifferences) {
  const int B = 2, T = 7, C = 5, K = 4, ldx = 8;  // x read from a strided buffer, as in the Mamba layer
  auto x = test::random_vector(B * T * ldx, 1);
  auto w = test::random_vector(C * K, 2);
  auto bias = test::random_vector(C, 3);
  auto r = test::random_vector(B * T * C, 4);
  std::vector<float> out(B * T * C), dx(B * T * ldx, 0.0f), dw(C * K, 0.0f), db(C, 0.0f);
  auto f = [&] {
    causal_conv_forward(out.data(), x.data(), ldx, w.data(), bias.data(), B, T, C, K);
    return test::dot(out.data(), r.data(), out.size());
  };
  f();
  causal_conv_backward(dx.data(), ldx, dw.data(), db.data(), r.data(), x.data(), ldx, w.data(), B, T, C, K);
  for (int i = 0; i < B * T; ++i)
    for (int c = C; c < ldx; ++c) dx[i * ldx + c] = 0.0f;  // columns past C are not conv inputs
  test::expect_gradient(f, x.data(), dx.data(), x.size(), "dx", 112);
  test::expect_gradient(f, w.data(), dw.data(), w.size(), "dw", 20);
  test::expect_gradient(f, bias.data(), db.data(), bias.size(), "dbias", 5);
}

}  // namespace
}  // namespace bmojo
