#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ssm_scan.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

struct ScanInputs {
  ScanDims d;
  int ldbc;
  std::vector<float> x, dt, A, bc, Dskip;
  ScanInputs(ScanDims dims, uint64_t seed) : d(dims) {
    ldbc = 3 + 2 * d.N;  // B and C sit at columns [3, 3+N) and [3+N, 3+2N), as after the x-projection
    const size_t BT = static_cast<size_t>(d.B) * d.T;
    x = test::random_vector(BT * d.C, seed);
    dt = test::random_vector(BT * d.C, seed + 1);
    for (auto& v : dt) v = 0.05f + 0.5f * std::fabs(v);  // positive, like softplus output
    A = test::random_vector(static_cast<size_t>(d.C) * d.N, seed + 2);
    for (auto& v : A) v = -0.2f - std::fabs(v);
    bc = test::random_vector(BT * ldbc, seed + 3);
    Dskip = test::random_vector(d.C, seed + 4);
  }
  const float* Bm() const { return bc.data() + 3; }
  const float* Cm() const { return bc.data() + 3 + d.N; }
  size_t size() const { return static_cast<size_t>(d.B) * d.T * d.C; }
};

class ScanShapes : public ::testing::TestWithParam<ScanDims> {};

TEST_P(ScanShapes, FastMatchesReference) {
  ScanInputs in(GetParam(), 5);
  const auto& d = in.d;
  std::vector<float> y(in.size()), y_ref(in.size());
  selective_scan_forward(y.data(), in.x.data(), in.dt.data(), in.A.data(), in.Bm(), in.Cm(), in.ldbc,
                         in.Dskip.data(), d);
  selective_scan_forward_reference(y_ref.data(), in.x.data(), in.dt.data(), in.A.data(), in.Bm(), in.Cm(),
                                   in.ldbc, in.Dskip.data(), d);
  EXPECT_LT(test::relative_error(y, y_ref), 1e-5);

  auto dy = test::random_vector(in.size(), 6);
  auto run = [&](bool reference, std::vector<float>& dx, std::vector<float>& ddt, std::vector<float>& dA,
                 std::vector<float>& dbc, std::vector<float>& dD) {
    dx.assign(in.size(), 0.0f);
    ddt.assign(in.size(), 0.0f);
    dA.assign(in.A.size(), 0.25f);  // accumulates
    dbc.assign(in.bc.size(), 0.0f);
    dD.assign(d.C, 0.25f);
    auto fn = reference ? selective_scan_backward_reference : selective_scan_backward;
    fn(dx.data(), ddt.data(), dA.data(), dbc.data() + 3, dbc.data() + 3 + d.N, dD.data(), dy.data(),
       in.x.data(), in.dt.data(), in.A.data(), in.Bm(), in.Cm(), in.ldbc, in.Dskip.data(), d);
  };
  std::vector<float> dx, ddt, dA, dbc, dD, rx, rdt, rA, rbc, rD;
  run(false, dx, ddt, dA, dbc, dD);
  run(true, rx, rdt, rA, rbc, rD);
  EXPECT_LT(test::relative_error(dx, rx), 1e-4);
  EXPECT_LT(test::relative_error(ddt, rdt), 1e-4);
  EXPECT_LT(test::relative_error(dA, rA), 1e-4);
  EXPECT_LT(test::relative_error(dbc, rbc), 1e-4);
  EXPECT_LT(test::relative_error(dD, rD), 1e-4);
}

TEST_P(ScanShapes, ReferenceBackwardMatchesFiniteDifferences) {
  ScanDims d = GetParam();
  d.T = std::min(d.T, 12);
  d.B = 1;
  ScanInputs in(d, 9);
  auto r = test::random_vector(in.size(), 10);
  std::vector<float> y(in.size());
  auto f = [&] {
    selective_scan_forward_reference(y.data(), in.x.data(), in.dt.data(), in.A.data(), in.Bm(), in.Cm(),
                                     in.ldbc, in.Dskip.data(), d);
    return test::dot(y.data(), r.data(), y.size());
  };
  std::vector<float> dx(in.size()), ddt(in.size()), dA(in.A.size(), 0.0f), dbc(in.bc.size(), 0.0f),
      dD(d.C, 0.0f);
  selective_scan_backward_reference(dx.data(), ddt.data(), dA.data(), dbc.data() + 3, dbc.data() + 3 + d.N,
                                    dD.data(), r.data(), in.x.data(), in.dt.data(), in.A.data(), in.Bm(),
                                    in.Cm(), in.ldbc, in.Dskip.data(), d);
  for (int t = 0; t < d.T; ++t)
    for (int c = 0; c < 3; ++c) dbc[t * in.ldbc + c] = 0.0f;  // the dt columns are not scan inputs
  test::expect_gradient(f, in.x.data(), dx.data(), dx.size(), "dx", 40);
  test::expect_gradient(f, in.dt.data(), ddt.data(), ddt.size(), "ddt", 40);
  test::expect_gradient(f, in.A.data(), dA.data(), dA.size(), "dA", 40);
  test::expect_gradient(f, in.bc.data(), dbc.data(), dbc.size(), "dB,dC", 60);
  test::expect_gradient(f, in.Dskip.data(), dD.data(), dD.size(), "dDskip", 20);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ScanShapes,
                         ::testing::Values(ScanDims{2, 37, 40, 16},  // channels not a multiple of the block
                                           ScanDims{1, 5, 16, 4},    // tiny
                                           ScanDims{3, 64, 33, 8},
                                           // Long enough for the backward's chunked recomputation (groups
                                           // of 64 channels, chunks of 32 steps), T and C ragged:
                                           ScanDims{2, 300, 90, 16}, ScanDims{1, 530, 20, 8}));

TEST(Scan, FinalStateMatchesStepByStep) {
  ScanInputs in(ScanDims{2, 9, 20, 16}, 40);
  const auto& d = in.d;
  std::vector<float> y(in.size()), state(static_cast<size_t>(d.B) * d.C * d.N);
  selective_scan_forward(y.data(), in.x.data(), in.dt.data(), in.A.data(), in.Bm(), in.Cm(), in.ldbc,
                         in.Dskip.data(), d, state.data());
  for (int b = 0; b < d.B; ++b)
    for (int c = 0; c < d.C; ++c)
      for (int n = 0; n < d.N; ++n) {
        double s = 0.0;
        for (int t = 0; t < d.T; ++t) {
          const size_t r = static_cast<size_t>(b) * d.T + t;
          s = std::exp(in.dt[r * d.C + c] * in.A[c * d.N + n]) * s +
              in.dt[r * d.C + c] * in.bc[r * in.ldbc + 3 + n] * in.x[r * d.C + c];
        }
        EXPECT_NEAR(state[(static_cast<size_t>(b) * d.C + c) * d.N + n], s, 1e-4);
      }
}

// A step over several sequences (one token each, states by pointer, advanced in place) gives the
// reference scan's outputs token by token from zero states, and exactly what the forward scan gives one
// sequence at a time from the same state; for the compiled state sizes and a run-time one, channels
// ragged against the kernel's groups.
TEST(Scan, StepOverSequencesMatchesTheForwardScan) {
  for (int N : {16, 8, 5}) {
    const int B = 5, T = 4;
    ScanInputs in(ScanDims{B, T, 150, N}, 50 + N);
    const auto& d = in.d;
    std::vector<float> y_ref(in.size());
    selective_scan_forward_reference(y_ref.data(), in.x.data(), in.dt.data(), in.A.data(), in.Bm(), in.Cm(),
                                     in.ldbc, in.Dskip.data(), d);
    std::vector<std::vector<float>> states(B, std::vector<float>(static_cast<size_t>(d.C) * N, 0.0f));
    std::vector<float*> pointers;
    for (auto& s : states) pointers.push_back(s.data());
    std::vector<float> got, want;
    for (int t = 0; t < T; ++t) {
      // Token t of every sequence, as the rows of one step.
      std::vector<float> x(B * d.C), dt(B * d.C), bc(B * in.ldbc), y(B * d.C);
      for (int b = 0; b < B; ++b) {
        const size_t r = static_cast<size_t>(b) * T + t;
        std::copy_n(in.x.data() + r * d.C, d.C, x.data() + b * d.C);
        std::copy_n(in.dt.data() + r * d.C, d.C, dt.data() + b * d.C);
        std::copy_n(in.bc.data() + r * in.ldbc, in.ldbc, bc.data() + b * in.ldbc);
      }
      std::vector<std::vector<float>> before = states;
      selective_scan_step(y.data(), x.data(), dt.data(), in.A.data(), bc.data() + 3, bc.data() + 3 + N,
                          in.ldbc, in.Dskip.data(), d.C, N, pointers.data(), B);
      for (int b = 0; b < B; ++b) {
        std::vector<float> one(d.C);
        const ScanDims single{1, 1, d.C, N};
        selective_scan_forward(one.data(), x.data() + b * d.C, dt.data() + b * d.C, in.A.data(),
                               bc.data() + b * in.ldbc + 3, bc.data() + b * in.ldbc + 3 + N, in.ldbc,
                               in.Dskip.data(), single, before[b].data(), before[b].data());
        for (int c = 0; c < d.C; ++c) {
          ASSERT_EQ(y[b * d.C + c], one[c]) << "N " << N << " sequence " << b << " t " << t;
          got.push_back(y[b * d.C + c]);
          want.push_back(y_ref[(static_cast<size_t>(b) * T + t) * d.C + c]);
        }
        EXPECT_EQ(states[b], before[b]) << "N " << N << " sequence " << b << " t " << t;
      }
    }
    EXPECT_LT(test::relative_error(got, want), 1e-5) << "N " << N;
  }
}

}  // namespace
}  // namespace bmojo
