#include <gtest/gtest.h>

#include "kernels/attention.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

// q, k, v packed per row as in the attention layer: [q (H Dh) | k (Hk Dh) | v (Hk Dh)].
struct Packed {
  AttentionDims d;
  int width;
  std::vector<float> qkv;
  Packed(AttentionDims dims, uint64_t seed) : d(dims) {
    width = (d.H + 2 * d.Hk) * d.Dh;
    qkv = test::random_vector(static_cast<size_t>(d.B) * d.T * width, seed);
  }
  float* q() { return qkv.data(); }
  float* k() { return qkv.data() + d.H * d.Dh; }
  float* v() { return qkv.data() + (d.H + d.Hk) * d.Dh; }
  size_t out_size() const { return static_cast<size_t>(d.B) * d.T * d.H * d.Dh; }
  size_t lse_size() const { return static_cast<size_t>(d.B) * d.H * d.T; }
};

AttentionDims dims(int B, int T, int H, int Hk, int Dh, int W) {
  AttentionDims d;
  d.B = B, d.T = T, d.H = H, d.Hk = Hk, d.Dh = Dh, d.window = W;
  return d;
}

class AttentionShapes : public ::testing::TestWithParam<AttentionDims> {};

TEST_P(AttentionShapes, FastMatchesReference) {
  Packed p(GetParam(), 11);
  const auto& d = p.d;
  const int od = d.H * d.Dh;
  std::vector<float> out(p.out_size()), out_ref(p.out_size()), lse(p.lse_size()), lse_ref(p.lse_size());
  attention_forward(out.data(), od, lse.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
  attention_forward_reference(out_ref.data(), od, lse_ref.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
  EXPECT_LT(test::relative_error(out, out_ref), 1e-5);
  EXPECT_LT(test::relative_error(lse, lse_ref), 1e-5);

  auto dout = test::random_vector(p.out_size(), 12);
  std::vector<float> g(p.qkv.size(), 0.0f), g_ref(p.qkv.size(), 0.0f);
  attention_backward(g.data(), g.data() + d.H * d.Dh, g.data() + (d.H + d.Hk) * d.Dh, dout.data(), out.data(), od,
                     lse.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
  attention_backward_reference(g_ref.data(), g_ref.data() + d.H * d.Dh, g_ref.data() + (d.H + d.Hk) * d.Dh,
                               dout.data(), out_ref.data(), od, lse_ref.data(), p.q(), p.width, p.k(), p.v(), p.width,
                               d);
  EXPECT_LT(test::relative_error(g, g_ref), 1e-4);
}

TEST_P(AttentionShapes, ReferenceBackwardMatchesFiniteDifferences) {
  AttentionDims d = GetParam();
  d.T = std::min(d.T, 20);  // keep the finite-difference loop small
  d.B = 1;
  Packed p(d, 21);
  const int od = d.H * d.Dh;
  auto r = test::random_vector(p.out_size(), 22);
  std::vector<float> out(p.out_size()), lse(p.lse_size()), g(p.qkv.size(), 0.0f);
  auto f = [&] {
    attention_forward_reference(out.data(), od, lse.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
    return test::dot(out.data(), r.data(), out.size());
  };
  f();
  attention_backward_reference(g.data(), g.data() + d.H * d.Dh, g.data() + (d.H + d.Hk) * d.Dh, r.data(), out.data(),
                               od, lse.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
  test::expect_gradient(f, p.qkv.data(), g.data(), p.qkv.size(), "dqkv", 150);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionShapes,
                         ::testing::Values(dims(2, 70, 4, 2, 8, 0),    // full span, GQA, T past one block
                                           dims(2, 70, 4, 4, 8, 16),   // window, T not a multiple of W
                                           dims(1, 150, 2, 1, 16, 48), // window, several query blocks, MQA
                                           dims(3, 5, 2, 2, 4, 3),     // tiny, T < block
                                           dims(1, 129, 2, 2, 8, 1))); // window of one: attends itself

TEST(Attention, KeysOutsideTheWindowAreNotRead) {
  const int W = 8;
  Packed p(dims(1, 40, 2, 2, 8, W), 31);
  const auto& d = p.d;
  const int od = d.H * d.Dh;
  std::vector<float> out(p.out_size()), out2(p.out_size()), lse(p.lse_size());
  attention_forward(out.data(), od, lse.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
  const int j = 5;  // perturb key and value of position j
  for (int c = 0; c < 2 * d.Hk * d.Dh; ++c) p.k()[j * p.width + c] += 3.0f;
  attention_forward(out2.data(), od, lse.data(), p.q(), p.width, p.k(), p.v(), p.width, d);
  for (int t = 0; t < d.T; ++t) {
    bool changed = false;
    for (int c = 0; c < od; ++c) changed = changed || out[t * od + c] != out2[t * od + c];
    const bool sees = t >= j && t - W + 1 <= j;  // j in [t-W+1, t]
    EXPECT_EQ(changed, sees) << "query " << t;
  }
}

}  // namespace
}  // namespace bmojo
