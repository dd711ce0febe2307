#include <gtest/gtest.h>

#include <algorithm>

#include "core/rng.hpp"
#include "kernels/attention.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

struct Case {
  AttentionDims d;
  bool fading = false;
  bool eidetic = false;
};

Case make_case(int B, int T, int H, int Hk, int Dh, int W, bool fading = false, bool eidetic = false) {
  Case c;
  c.d.B = B, c.d.T = T, c.d.H = H, c.d.Hk = Hk, c.d.Dh = Dh, c.d.window = W;
  c.fading = fading;
  c.eidetic = eidetic;
  return c;
}

// A random memory per chunk: a sorted subset of the positions before the chunk, as the selection would give.
EideticPlan random_plan(int B, int T, int W, uint64_t seed) {
  Rng rng(seed);
  EideticPlan plan;
  plan.positions.resize(B);
  const int chunks = (T + W - 1) / W;
  for (int b = 0; b < B; ++b) {
    plan.positions[b].resize(chunks);
    for (int c = 1; c < chunks; ++c) {
      auto& p = plan.positions[b][c];
      for (int j = 0; j < c * W; ++j)
        if (rng.uniform() < 0.3) p.push_back(j);
      while (p.size() > 6) p.erase(p.begin() + static_cast<long>(rng.uniform() * p.size()));
    }
  }
  return plan;
}

// Every input of one attention call, laid out as in the B'MOJO layer: [q | k | v] rows, [kf | vf] rows and
// unrotated [q | k] rows.
struct Inputs {
  Case c;
  int width, qd, kvd;
  std::vector<float> qkv, kvf, qk_raw;
  EideticPlan plan;
  Inputs(const Case& cs, uint64_t seed) : c(cs) {
    const auto& d = c.d;
    qd = d.H * d.Dh;
    kvd = d.Hk * d.Dh;
    width = qd + 2 * kvd;
    const size_t rows = static_cast<size_t>(d.B) * d.T;
    qkv = test::random_vector(rows * width, seed);
    kvf = test::random_vector(rows * 2 * kvd, seed + 1);
    qk_raw = test::random_vector(rows * (qd + kvd), seed + 2);
    if (c.eidetic) plan = random_plan(d.B, d.T, d.window, seed + 3);
  }
  AttentionInputs view() const {
    AttentionInputs in;
    in.q = qkv.data(), in.ldq = width;
    in.k = qkv.data() + qd, in.v = qkv.data() + qd + kvd, in.ldkv = width;
    if (c.fading) in.kf = kvf.data(), in.vf = kvf.data() + kvd, in.ldf = 2 * kvd;
    if (c.eidetic) {
      in.q_raw = qk_raw.data(), in.ldq_raw = qd + kvd;
      in.k_raw = qk_raw.data() + qd, in.ldk_raw = qd + kvd;
      in.eidetic = &plan;
    }
    return in;
  }
  size_t out_size() const { return static_cast<size_t>(c.d.B) * c.d.T * qd; }
  size_t lse_size() const { return static_cast<size_t>(c.d.B) * c.d.H * c.d.T; }
};

struct Grads {
  std::vector<float> dqkv, dkvf, dqk_raw;
  explicit Grads(const Inputs& p)
      : dqkv(p.qkv.size(), 0.0f), dkvf(p.kvf.size(), 0.0f), dqk_raw(p.qk_raw.size(), 0.0f) {}
  AttentionGrads view(const Inputs& p) {
    AttentionGrads g;
    g.dq = dqkv.data(), g.dk = dqkv.data() + p.qd, g.dv = dqkv.data() + p.qd + p.kvd;
    g.dkf = dkvf.data(), g.dvf = dkvf.data() + p.kvd;
    g.dq_raw = dqk_raw.data(), g.dk_raw = dqk_raw.data() + p.qd;
    return g;
  }
};

class AttentionShapes : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionShapes, FastMatchesReference) {
  Inputs p(GetParam(), 11);
  const auto& d = p.c.d;
  std::vector<float> out(p.out_size()), out_ref(p.out_size()), lse(p.lse_size()), lse_ref(p.lse_size());
  attention_forward(out.data(), p.qd, lse.data(), p.view(), d);
  attention_forward_reference(out_ref.data(), p.qd, lse_ref.data(), p.view(), d);
  EXPECT_LT(test::relative_error(out, out_ref), 1e-5);
  EXPECT_LT(test::relative_error(lse, lse_ref), 1e-5);

  auto dout = test::random_vector(p.out_size(), 12);
  Grads g(p), g_ref(p);
  attention_backward(g.view(p), dout.data(), out.data(), p.qd, lse.data(), p.view(), d);
  attention_backward_reference(g_ref.view(p), dout.data(), out_ref.data(), p.qd, lse_ref.data(), p.view(), d);
  EXPECT_LT(test::relative_error(g.dqkv, g_ref.dqkv), 1e-4);
  if (p.c.fading) {
    EXPECT_LT(test::relative_error(g.dkvf, g_ref.dkvf), 1e-4);
  }
  if (p.c.eidetic) {
    EXPECT_LT(test::relative_error(g.dqk_raw, g_ref.dqk_raw), 1e-4);
  }
}

TEST_P(AttentionShapes, ReferenceBackwardMatchesFiniteDifferences) {
  Case c = GetParam();
  c.d.T = std::min(c.d.T, 3 * std::max(c.d.window, 4) + 2);  // keep the finite-difference loop small
  c.d.B = 1;
  Inputs p(c, 21);
  auto r = test::random_vector(p.out_size(), 22);
  std::vector<float> out(p.out_size()), lse(p.lse_size());
  auto f = [&] {
    attention_forward_reference(out.data(), p.qd, lse.data(), p.view(), c.d);
    return test::dot(out.data(), r.data(), out.size());
  };
  f();
  Grads g(p);
  attention_backward_reference(g.view(p), r.data(), out.data(), p.qd, lse.data(), p.view(), c.d);
  test::expect_gradient(f, p.qkv.data(), g.dqkv.data(), p.qkv.size(), "dqkv", 150);
  if (c.fading) test::expect_gradient(f, p.kvf.data(), g.dkvf.data(), p.kvf.size(), "dkvf", 100);
  if (c.eidetic) test::expect_gradient(f, p.qk_raw.data(), g.dqk_raw.data(), p.qk_raw.size(), "dqk_raw", 150);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionShapes,
    ::testing::Values(make_case(2, 70, 4, 2, 8, 0),              // full span, GQA, T past one block
                      make_case(2, 70, 4, 4, 8, 16),             // window, T not a multiple of W
                      make_case(1, 150, 2, 1, 16, 48),           // window, several query blocks, MQA
                      make_case(3, 5, 2, 2, 4, 3),               // tiny, T < block
                      make_case(1, 129, 2, 2, 8, 1),             // window of one: attends itself
                      make_case(2, 70, 4, 2, 8, 16, true),       // fading keys, GQA
                      make_case(1, 200, 2, 2, 8, 80, true),      // fading, W past one query block
                      make_case(2, 45, 2, 1, 8, 7, true, true),  // fading and eidetic, T not a multiple of W
                      make_case(1, 150, 4, 2, 8, 40, true, true),   // several blocks per chunk
                      make_case(2, 30, 2, 2, 4, 4, false, true)));  // eidetic without fading

// Which queries change when one input row changes: the key sets of SPEC section 3.
std::vector<bool> queries_changed(Inputs& p, std::vector<float>& buffer, size_t row_offset, int cols) {
  const auto& d = p.c.d;
  std::vector<float> out(p.out_size()), out2(p.out_size()), lse(p.lse_size());
  attention_forward(out.data(), p.qd, lse.data(), p.view(), d);
  for (int c = 0; c < cols; ++c) buffer[row_offset + c] += 3.0f;
  attention_forward(out2.data(), p.qd, lse.data(), p.view(), d);
  for (int c = 0; c < cols; ++c) buffer[row_offset + c] -= 3.0f;
  std::vector<bool> changed(d.T, false);
  for (int t = 0; t < d.T; ++t)
    for (int c = 0; c < p.qd; ++c) changed[t] = changed[t] || out[t * p.qd + c] != out2[t * p.qd + c];
  return changed;
}

TEST(Attention, QueriesReadExactlyTheirWindowAndFadingKeys) {
  const int W = 8, T = 45;
  Inputs p(make_case(1, T, 2, 2, 8, W, true), 31);
  for (int j : {0, 5, 13, 30, 44}) {
    const auto ctx = queries_changed(p, p.qkv, static_cast<size_t>(j) * p.width + p.qd, 2 * p.kvd);
    const auto fade = queries_changed(p, p.kvf, static_cast<size_t>(j) * 2 * p.kvd, 2 * p.kvd);
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(ctx[t], t - W + 1 <= j && j <= t) << "in-context key " << j << ", query " << t;
      EXPECT_EQ(fade[t], t - 2 * W + 1 <= j && j <= t - W) << "fading key " << j << ", query " << t;
    }
  }
}

TEST(Attention, EideticEntriesFollowTheVisibilityRule) {
  const int W = 6, T = 40;
  Inputs p(make_case(1, T, 2, 2, 8, W, true, true), 41);
  // Memory before chunk c: every position < c W, so visibility alone decides.
  for (int c = 0; c * W < T; ++c) {
    p.plan.positions[0][c].clear();
    for (int j = 0; j < c * W; ++j) p.plan.positions[0][c].push_back(j);
  }
  for (int j : {0, 3, 11, 20}) {
    const auto seen = queries_changed(p, p.qk_raw, static_cast<size_t>(j) * (p.qd + p.kvd) + p.qd, p.kvd);
    for (int t = 0; t < T; ++t)
      EXPECT_EQ(seen[t], j < (t / W) * W && j <= t - W) << "entry " << j << ", query " << t;
  }
}

}  // namespace
}  // namespace bmojo
