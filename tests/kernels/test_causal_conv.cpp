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

// Stepping several sequences one input at a time (decode over a batch) gives the forward pass's outputs
// for each of them, and leaves each sequence's last K - 1 inputs as its state; K = 1 keeps no state.
TEST(CausalConv, StepOverSequencesMatchesTheForwardPass) {
  for (int K : {4, 2, 1}) {
    const int B = 3, T = 6, C = 37, ldx = 2 * C;  // x read from the xz rows, as in the Mamba layer
    const auto x = test::random_vector(B * T * ldx, 4);
    const auto w = test::random_vector(C * K, 5);
    const auto bias = test::random_vector(C, 6);
    std::vector<float> want(B * T * C);
    causal_conv_forward(want.data(), x.data(), ldx, w.data(), bias.data(), B, T, C, K);
    std::vector<std::vector<float>> states(B, std::vector<float>((K - 1) * C, 0.0f));
    std::vector<float*> pointers;
    for (auto& s : states) pointers.push_back(s.data());
    for (int t = 0; t < T; ++t) {
      std::vector<float> rows(B * ldx), out(B * C);
      for (int b = 0; b < B; ++b) std::copy_n(x.data() + (b * T + t) * ldx, ldx, rows.data() + b * ldx);
      causal_conv_step(out.data(), rows.data(), ldx, w.data(), bias.data(), pointers.data(), B, C, K);
      for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c)
          EXPECT_NEAR(out[b * C + c], want[(b * T + t) * C + c], 1e-5) << "K " << K << " t " << t;
    }
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < K - 1; ++k)
        for (int c = 0; c < C; ++c)
          EXPECT_EQ(states[b][k * C + c], x[(b * T + T - (K - 1) + k) * ldx + c])
              << "state of sequence " << b;
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

// The fast forms (tap-major weights) against the references: the same sums in the same order, so equal
// bit for bit, at ragged channel counts (vector tails), K from 1 to 4, strided x and dx, T < K (every output
// reads padding) and dw, dbias accumulating onto values already there.
TEST(CausalConv, FastFormsEqualTheReferences) {
  for (int K : {4, 3, 1})
    for (int C : {1, 17, 128})
      for (int T : {1, 3, 9}) {
        const int B = 2, ldx = 2 * C + 3;
        const auto x = test::random_vector(B * T * ldx, 11), dout = test::random_vector(B * T * C, 12);
        const auto w = test::random_vector(C * K, 13), bias = test::random_vector(C, 14);
        std::vector<float> out(B * T * C), want_out(B * T * C);
        causal_conv_forward(out.data(), x.data(), ldx, w.data(), bias.data(), B, T, C, K);
        causal_conv_forward_reference(want_out.data(), x.data(), ldx, w.data(), bias.data(), B, T, C, K);
        EXPECT_EQ(out, want_out) << "forward K " << K << " C " << C << " T " << T;
        auto dx = test::random_vector(B * T * ldx, 15), want_dx = dx;
        auto dw = test::random_vector(C * K, 16), want_dw = dw;
        auto db = test::random_vector(C, 17), want_db = db;
        causal_conv_backward(dx.data(), ldx, dw.data(), db.data(), dout.data(), x.data(), ldx, w.data(), B, T,
                             C, K);
        causal_conv_backward_reference(want_dx.data(), ldx, want_dw.data(), want_db.data(), dout.data(),
                                       x.data(), ldx, w.data(), B, T, C, K);
        EXPECT_EQ(dx, want_dx) << "dx K " << K << " C " << C << " T " << T;
        EXPECT_EQ(dw, want_dw) << "dw K " << K << " C " << C << " T " << T;
        EXPECT_EQ(db, want_db) << "dbias K " << K << " C " << C << " T " << T;
      }
}

}  // namespace
}  // namespace bmojo
