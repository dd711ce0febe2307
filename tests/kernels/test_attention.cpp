#include <gtest/gtest.h>

#include <algorithm>

#include "core/bf16.hpp"
#include "core/error.hpp"
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

namespace bmojo {
namespace {

// The recurrent step's attention (attention_step): blocks of queries of one sequence read its caches.
// Caches built from one parallel call's inputs: the window and fading rows of the positions a block may
// read (plus a few older rows the kernel must skip), the memory of the block's chunk from the plan.
struct StepCaches {
  std::vector<float> window, fading, memory;
  std::vector<int64_t> memory_positions;
  int64_t window_first = 0, fading_first = 0;
};

StepCaches caches_for(const Inputs& p, int t0, int n, int extra) {
  const AttentionDims& d = p.c.d;
  const int W = d.window, kvd = p.kvd;
  StepCaches c;
  c.window_first = std::max(0, (W > 0 ? t0 - W + 1 : 0) - extra);
  for (int j = static_cast<int>(c.window_first); j < t0 + n; ++j) {
    const float* r = p.qkv.data() + static_cast<size_t>(j) * p.width + p.qd;
    c.window.insert(c.window.end(), r, r + 2 * kvd);  // [k | v]
  }
  if (p.c.fading) {
    c.fading_first = std::max(0, t0 - 2 * W + 1 - extra);
    for (int j = static_cast<int>(c.fading_first); j < t0 + n; ++j) {
      const float* r = p.kvf.data() + static_cast<size_t>(j) * 2 * kvd;
      c.fading.insert(c.fading.end(), r, r + 2 * kvd);
    }
  }
  if (p.c.eidetic)
    for (int32_t e : p.plan.positions[0][t0 / W]) {
      c.memory_positions.push_back(e);
      const float* k = p.qk_raw.data() + static_cast<size_t>(e) * (p.qd + kvd) + p.qd;
      const float* v = p.qkv.data() + static_cast<size_t>(e) * p.width + p.qd + kvd;
      c.memory.insert(c.memory.end(), k, k + kvd);
      c.memory.insert(c.memory.end(), v, v + kvd);
    }
  return c;
}

StepAttentionTask task_for(const Inputs& p, const StepCaches& c, int t0, int n, float* out) {
  StepAttentionTask t;
  t.q = p.qkv.data() + static_cast<size_t>(t0) * p.width;
  t.ldq = p.width;
  if (p.c.eidetic) {
    t.q_raw = p.qk_raw.data() + static_cast<size_t>(t0) * (p.qd + p.kvd);
    t.ldq_raw = p.qd + p.kvd;
  }
  t.out = out;
  t.ldo = p.qd;
  t.t0 = t0;
  t.n = n;
  t.keys.window = c.window.data();
  t.keys.window_first = c.window_first;
  t.keys.ld = 2 * p.kvd;
  if (p.c.fading) {
    t.keys.fading = c.fading.data();
    t.keys.fading_first = c.fading_first;
  }
  if (!c.memory_positions.empty()) {
    t.keys.memory = c.memory.data();
    t.keys.memory_positions = c.memory_positions.data();
    t.keys.memory_count = static_cast<int>(c.memory_positions.size());
  }
  return t;
}

// Every position of one sequence split into ragged blocks (blocks of memory layers never straddle a chunk),
// all blocks given to one call as independent tasks: each block's output equals the parallel form's rows,
// for the fast kernel and for the reference; and the two agree.
TEST(AttentionStep, RaggedBlocksMatchTheParallelForm) {
  const Case cases[] = {make_case(1, 150, 4, 2, 8, 0), make_case(1, 150, 4, 4, 8, 9),
                        make_case(1, 150, 4, 2, 8, 9, true), make_case(1, 160, 4, 2, 8, 8, true, true),
                        make_case(1, 150, 2, 1, 16, 70, true)};
  for (const Case& cs : cases) {
    const Inputs p(cs, 11);
    std::vector<float> want(p.out_size()), lse(p.lse_size());
    attention_forward_reference(want.data(), p.qd, lse.data(), p.view(), cs.d);
    Rng rng(5);
    std::vector<StepCaches> caches;
    std::vector<std::pair<int, int>> blocks;
    const int W = cs.d.window;
    for (int t0 = 0; t0 < cs.d.T;) {
      int n = 1 + static_cast<int>(rng.below(70));  // crosses the kernel's 64-query blocks
      if (cs.eidetic) n = std::min(n, W - t0 % W);
      n = std::min(n, cs.d.T - t0);
      blocks.push_back({t0, n});
      caches.push_back(caches_for(p, t0, n, static_cast<int>(rng.below(4))));
      t0 += n;
    }
    for (bool reference : {false, true}) {
      std::vector<float> got(p.out_size(), -7.0f);
      std::vector<StepAttentionTask> tasks;
      for (size_t i = 0; i < blocks.size(); ++i)
        tasks.push_back(task_for(p, caches[i], blocks[i].first, blocks[i].second,
                                 got.data() + static_cast<size_t>(blocks[i].first) * p.qd));
      (reference ? attention_step_reference : attention_step)(tasks.data(), tasks.size(), cs.d);
      EXPECT_LT(test::relative_error(got, want), 1e-5)
          << "W " << W << " fading " << cs.fading << " eidetic " << cs.eidetic << " reference " << reference;
    }
  }
}

// Decode-shaped tasks (1 to 4 queries, the direct loops rather than BLAS) at every head dimension the
// register-tiled kernels take (16 to 128) and at one they do not (24, the plain loops), with window, fading
// and memory keys: the fast kernel agrees with the reference, and with the parallel form.
TEST(AttentionStep, DecodeBlocksMatchTheReferenceAtEveryHeadDimension) {
  for (int Dh :
       {8, 16, 24, 32, 40, 48, 64, 128, 136}) {  // AVX2's 8-lane and AVX-512's 16-lane kernels, plain loops
    const Case cs = make_case(1, 100, 2, 1, Dh, 16, true, true);
    const Inputs p(cs, 31 + Dh);
    std::vector<float> want(p.out_size()), lse(p.lse_size());
    attention_forward_reference(want.data(), p.qd, lse.data(), p.view(), cs.d);
    Rng rng(7);
    for (int t0 = 0; t0 < cs.d.T;) {
      const int n = std::min({1 + static_cast<int>(rng.below(4)), 16 - t0 % 16, cs.d.T - t0});
      const StepCaches c = caches_for(p, t0, n, static_cast<int>(rng.below(3)));
      std::vector<float> fast(static_cast<size_t>(n) * p.qd, -7.0f), ref(fast.size(), -7.0f);
      StepAttentionTask t = task_for(p, c, t0, n, fast.data());
      attention_step(&t, 1, cs.d);
      t.out = ref.data();
      attention_step_reference(&t, 1, cs.d);
      const std::vector<float> rows(want.begin() + static_cast<int64_t>(t0) * p.qd,
                                    want.begin() + static_cast<int64_t>(t0 + n) * p.qd);
      EXPECT_LT(test::relative_error(fast, ref), 1e-5) << "Dh " << Dh << " t0 " << t0 << " n " << n;
      EXPECT_LT(test::relative_error(fast, rows), 1e-5) << "Dh " << Dh << " t0 " << t0 << " n " << n;
      t0 += n;
    }
  }
}

// Caches stored as bf16 (a state with --kv-storage bf16): the window, fading and memory rows rounded; the
// kernel widens them as it reads. For decode blocks (the direct loops, every head dimension they take and the
// plain loops) and prefill blocks (widened for BLAS): the fast kernel equals the reference over the same bf16
// rows, and both equal the fp32 kernel given the rounded values as fp32 rows, so the only change is the
// rounding itself, which moves the output by well under a percent.
TEST(AttentionStep, Bf16CachesReadAsTheirRoundedValues) {
  for (int Dh : {8, 16, 24, 64, 136}) {
    const Case cs = make_case(1, 100, 2, 1, Dh, 16, true, true);
    const Inputs p(cs, 41 + Dh);
    Rng rng(9);
    for (int t0 = 0; t0 < cs.d.T;) {
      const int n = std::min({1 + static_cast<int>(rng.below(12)), 16 - t0 % 16, cs.d.T - t0});
      const StepCaches c = caches_for(p, t0, n, static_cast<int>(rng.below(3)));
      const auto rounded = [](const std::vector<float>& x, std::vector<uint16_t>& h) {
        h.resize(x.size());
        std::vector<float> wide(x.size());
        for (size_t i = 0; i < x.size(); ++i) wide[i] = bf16_to_float(h[i] = round_to_bf16(x[i]));
        return wide;
      };
      std::vector<uint16_t> window16, fading16, memory16;
      StepCaches wide = c;
      wide.window = rounded(c.window, window16);
      wide.fading = rounded(c.fading, fading16);
      wide.memory = rounded(c.memory, memory16);
      const size_t size = static_cast<size_t>(n) * p.qd;
      std::vector<float> exact(size), of_rounded(size), fast(size, -7.0f), ref(size, -7.0f);
      StepAttentionTask t = task_for(p, c, t0, n, exact.data());
      attention_step(&t, 1, cs.d);
      t = task_for(p, wide, t0, n, of_rounded.data());
      attention_step(&t, 1, cs.d);
      t.keys.window = nullptr;
      t.keys.window16 = window16.data();
      t.keys.fading = nullptr;
      t.keys.fading16 = fading16.data();
      if (t.keys.memory != nullptr) {
        t.keys.memory = nullptr;
        t.keys.memory16 = memory16.data();
      }
      t.out = fast.data();
      attention_step(&t, 1, cs.d);
      t.out = ref.data();
      attention_step_reference(&t, 1, cs.d);
      EXPECT_LT(test::relative_error(fast, ref), 1e-5) << "Dh " << Dh << " t0 " << t0 << " n " << n;
      EXPECT_LT(test::relative_error(fast, of_rounded), 1e-5) << "Dh " << Dh << " t0 " << t0 << " n " << n;
      const double moved = test::relative_error(fast, exact);
      EXPECT_LT(moved, 1e-2) << "Dh " << Dh << " t0 " << t0 << " n " << n;
      EXPECT_GT(moved, 0.0) << "the rounding is visible";
      t0 += n;
    }
  }
  // Both storages of one set of rows in one task are refused.
  const Case cs = make_case(1, 20, 2, 1, 16, 8);
  const Inputs p(cs, 3);
  const StepCaches c = caches_for(p, 10, 1, 0);
  std::vector<uint16_t> h(c.window.size());
  std::vector<float> out(p.qd);
  StepAttentionTask t = task_for(p, c, 10, 1, out.data());
  t.keys.window16 = h.data();
  EXPECT_THROW(attention_step(&t, 1, cs.d), Error);
}

// A decode step over many sequences: each item walks one sequence's rows for all its heads, in blocks of
// rows. Tasks of 1 to 4 queries at many positions (GQA, window + fading + memory, some with retrieved
// entries of different counts per KV head, some with bf16 rows) in one call: each equals the reference.
TEST(AttentionStep, ManyDecodeTasksInOneCallMatchTheReference) {
  for (int Dh : {16, 24, 64}) {
    const Case cs = make_case(1, 120, 4, 2, Dh, 40, true, true);
    const Inputs p(cs, 51 + Dh);
    Rng rng(13);
    std::vector<StepCaches> caches;
    std::vector<std::vector<uint16_t>> halves;
    std::vector<std::pair<int, int>> blocks;
    for (int t0 : {5, 39, 44, 80, 81, 100, 117}) {
      const int n = std::min({1 + static_cast<int>(rng.below(4)), 40 - t0 % 40, cs.d.T - t0});
      blocks.push_back({t0, n});
      caches.push_back(caches_for(p, t0, n, static_cast<int>(rng.below(3))));
    }
    const std::vector<float> rows0 = test::random_vector(3 * 2 * Dh, 3),
                             rows1 = test::random_vector(1 * 2 * Dh, 4);
    const std::vector<int64_t> pos0 = {-1, 20, 60}, pos1 = {30};
    const float* retrieved[2] = {rows0.data(), rows1.data()};
    const int64_t* positions[2] = {pos0.data(), pos1.data()};
    const int counts[2] = {3, 1};
    const size_t tasks_n = blocks.size();
    std::vector<std::vector<float>> fast(tasks_n), ref(tasks_n);
    std::vector<StepAttentionTask> tasks;
    halves.resize(3 * tasks_n);
    for (size_t i = 0; i < tasks_n; ++i) {
      fast[i].assign(static_cast<size_t>(blocks[i].second) * p.qd, -7.0f);
      ref[i] = fast[i];
      StepAttentionTask t = task_for(p, caches[i], blocks[i].first, blocks[i].second, fast[i].data());
      if (i % 2 == 1) {  // the rows as bf16
        const auto half = [](const std::vector<float>& x, std::vector<uint16_t>& h) {
          h.resize(x.size());
          for (size_t j = 0; j < x.size(); ++j) h[j] = round_to_bf16(x[j]);
          return h.data();
        };
        t.keys.window16 = half(caches[i].window, halves[3 * i]);
        t.keys.window = nullptr;
        t.keys.fading16 = half(caches[i].fading, halves[3 * i + 1]);
        t.keys.fading = nullptr;
        if (t.keys.memory != nullptr) {
          t.keys.memory16 = half(caches[i].memory, halves[3 * i + 2]);
          t.keys.memory = nullptr;
        }
      }
      if (i % 3 != 0 && t.keys.memory_count >= 0) {
        t.keys.retrieved = retrieved;
        t.keys.retrieved_positions = positions;
        t.keys.retrieved_count = counts;
      }
      tasks.push_back(t);
    }
    attention_step(tasks.data(), tasks.size(), cs.d);
    for (size_t i = 0; i < tasks_n; ++i) {
      StepAttentionTask t = tasks[i];
      t.out = ref[i].data();
      attention_step_reference(&t, 1, cs.d);
      EXPECT_LT(test::relative_error(fast[i], ref[i]), 1e-5) << "Dh " << Dh << " task " << i;
    }
  }
}

// Entries read from a store: visible to query t only when p <= t - W (p = -1, an earlier run's, always),
// read with the unrotated query; the fast kernel agrees with the reference, and an entry that is visible
// changes the output while an invisible one does not.
TEST(AttentionStep, RetrievedEntriesFollowTheVisibilityRule) {
  const Case cs = make_case(1, 40, 4, 2, 8, 8, true, true);
  const Inputs p(cs, 21);
  const int t0 = 32, n = 6;
  const StepCaches c = caches_for(p, t0, n, 0);
  const std::vector<float> rows0 = test::random_vector(3 * 16, 3), rows1 = test::random_vector(2 * 16, 4);
  const std::vector<int64_t> pos0 = {-1, 20, 27}, pos1 = {24, 29};
  const float* rows[2] = {rows0.data(), rows1.data()};
  const int64_t* positions[2] = {pos0.data(), pos1.data()};
  const int counts[2] = {3, 2};
  std::vector<float> fast(n * p.qd), ref(n * p.qd), none(n * p.qd);
  StepAttentionTask t = task_for(p, c, t0, n, none.data());
  attention_step_reference(&t, 1, cs.d);
  t.keys.retrieved = rows;
  t.keys.retrieved_positions = positions;
  t.keys.retrieved_count = counts;
  t.out = ref.data();
  attention_step_reference(&t, 1, cs.d);
  t.out = fast.data();
  attention_step(&t, 1, cs.d);
  EXPECT_LT(test::relative_error(fast, ref), 1e-5);
  // Query 32 (t - W = 24) reads -1 and 20 of head 0 and 24 of head 1, not 27 or 29: changing entry 27 of
  // head 0 leaves row 0 alone and changes row 3 (t = 35, reads up to 27).
  std::vector<float> changed_rows = rows0;
  for (int j = 32; j < 48; ++j) changed_rows[j] += 1.0f;
  rows[0] = changed_rows.data();
  std::vector<float> changed(n * p.qd);
  t.out = changed.data();
  attention_step_reference(&t, 1, cs.d);
  for (int j = 0; j < p.qd; ++j) EXPECT_EQ(changed[j], ref[j]) << "row 0 must not read entry 27";
  double moved = 0.0;
  for (int j = 0; j < p.qd; ++j) moved += std::fabs(changed[3 * p.qd + j] - ref[3 * p.qd + j]);
  EXPECT_GT(moved, 1e-4) << "row 3 reads entry 27";
  double differs = 0.0;
  for (size_t j = 0; j < ref.size(); ++j) differs += std::fabs(ref[j] - none[j]);
  EXPECT_GT(differs, 1e-4) << "retrieved entries are read at all";
}

}  // namespace
}  // namespace bmojo
