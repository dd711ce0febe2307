// The special cases of SPEC sections 1-4 that pin the F and B layers: B with no memory is F, F without its
// SSM branch is windowed A, and the innovation selection (promotion, ties, eviction, visibility).
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/innovation.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

ModelConfig base_config(const std::string& layers) {
  ModelConfig c;
  c.vocab_size = 31;
  c.d_model = 16;
  c.n_heads = 2;
  c.layers = layers;
  c.window = 5;
  c.d_ff = 12;
  c.d_state = 4;
  c.eidetic_per_chunk = 2;
  c.eidetic_capacity = 4;
  return c;
}

// Copies every tensor of `from` that `to` has under the same name and shape; returns how many.
int copy_shared_weights(Model& to, const Model& from) {
  int n = 0;
  for (const TensorSpec& t : to.layout().tensors()) {
    if (!from.layout().contains(t.name)) continue;
    const TensorSpec& f = from.layout().find(t.name);
    EXPECT_EQ(f.numel, t.numel) << t.name;
    std::memcpy(to.params() + t.offset, from.params() + f.offset, sizeof(float) * t.numel);
    ++n;
  }
  return n;
}

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& tokens, int B, int T) {
  std::vector<float> out(static_cast<size_t>(B) * T * m.config().vocab_size);
  m.logits(tokens.data(), B, T, out.data());
  return out;
}

TEST(BmojoLayers, BWithoutMemoryComputesWhatFComputes) {
  const int B = 2, T = 23;  // T not a multiple of W = 5
  ModelConfig f_cfg = base_config("FBF");
  f_cfg.layers = "FFF";
  Model f(f_cfg);
  test::randomize_model(f, 3);
  const auto tokens = test::random_tokens(B * T, f_cfg.vocab_size, 4);
  const auto expected = logits_of(f, tokens, B, T);
  for (auto [k, m] : {std::pair{0, 4}, std::pair{2, 0}}) {
    ModelConfig b_cfg = base_config("FBF");
    b_cfg.eidetic_per_chunk = k;
    b_cfg.eidetic_capacity = m;
    Model b(b_cfg);
    test::randomize_model(b, 5);
    EXPECT_EQ(copy_shared_weights(b, f), static_cast<int>(f.layout().tensors().size()));
    EXPECT_LT(test::relative_error(logits_of(b, tokens, B, T), expected), 1e-6) << "k=" << k << " m=" << m;
  }
  // With memory the B layer does read entries, so the equality above is not vacuous.
  Model b(base_config("FBF"));
  test::randomize_model(b, 5);
  copy_shared_weights(b, f);
  EXPECT_GT(test::relative_error(logits_of(b, tokens, B, T), expected), 1e-4);
}

TEST(BmojoLayers, FWithoutSsmBranchComputesWhatWindowedAComputes) {
  const int B = 2, T = 27;
  ModelConfig a_cfg = base_config("AMA");
  Model a(a_cfg);
  test::randomize_model(a, 6);
  ModelConfig f_cfg = base_config("FMF");
  f_cfg.fading = false;
  Model f(f_cfg);
  test::randomize_model(f, 7);
  copy_shared_weights(f, a);
  // One rule (layer_parts) for every part: no Mamba weights are kept for a branch that is off, nor a
  // separate fading projection for fading keys that are not made.
  EXPECT_EQ(f.num_params(), a.num_params());
  ModelConfig untied = f_cfg;
  untied.tie_fading = false;
  EXPECT_EQ(Model(untied).num_params(), a.num_params());
  const auto tokens = test::random_tokens(B * T, a_cfg.vocab_size, 8);
  EXPECT_LT(test::relative_error(logits_of(f, tokens, B, T), logits_of(a, tokens, B, T)), 1e-6);
  // And with the branch on, the fading keys change the result.
  ModelConfig on = f_cfg;
  on.fading = true;
  Model g(on);
  test::randomize_model(g, 7);
  copy_shared_weights(g, a);
  EXPECT_GT(test::relative_error(logits_of(g, tokens, B, T), logits_of(a, tokens, B, T)), 1e-4);
}

TEST(BmojoLayers, FutureTokensDoNotChangePastLogits) {
  for (const char* layers : {"FB", "BMA"}) {
    ModelConfig cfg = base_config(layers);
    Model model(cfg);
    test::randomize_model(model, 9);
    const int T = 26, V = cfg.vocab_size;
    auto tokens = test::random_tokens(T, V, 10);
    const auto a = logits_of(model, tokens, 1, T);
    tokens[17] = (tokens[17] + 1) % V;
    const auto b = logits_of(model, tokens, 1, T);
    for (int i = 0; i < 17 * V; ++i) ASSERT_EQ(a[i], b[i]) << layers << " position " << i / V;
  }
}

TEST(BmojoLayers, ModelPlansObeyVisibilityAndCapacity) {
  ModelConfig cfg = base_config("BB");
  Model model(cfg);
  test::randomize_model(model, 11);
  const int B = 3, T = 33;
  const auto tokens = test::random_tokens(B * T, cfg.vocab_size, 12);
  logits_of(model, tokens, B, T);
  for (size_t l = 0; l < 2; ++l) {
    const EideticPlan& plan = model.eidetic_plan(l);
    ASSERT_EQ(plan.positions.size(), static_cast<size_t>(B));
    bool any = false;
    for (const auto& chunks : plan.positions) {
      ASSERT_EQ(chunks.size(), 7u);  // ceil(33 / 5)
      for (size_t c = 0; c < chunks.size(); ++c) {
        EXPECT_LE(chunks[c].size(), static_cast<size_t>(cfg.eidetic_capacity));
        EXPECT_LE(chunks[c].size(), c * cfg.eidetic_per_chunk);
        for (int32_t p : chunks[c]) EXPECT_LT(p, static_cast<int32_t>(c) * cfg.window) << "chunk " << c;
        any = any || !chunks[c].empty();
      }
    }
    EXPECT_TRUE(any);
  }
}

SelectionRule rule(int W, int k, int m, double tau, Eviction e) {
  SelectionRule r;
  r.window = W, r.per_chunk = k, r.capacity = m, r.tau = tau, r.eviction = e;
  return r;
}

TEST(InnovationSelection, PromotesTopKAboveThresholdWithEarlierPositionsOnTies) {
  EideticMemory mem(rule(6, 3, 10, 0.5, Eviction::kFifo));
  const float scores[6] = {0.9f, 0.2f, 0.9f, 0.9f, 0.4f, 1.5f};
  mem.promote_chunk(scores, 12);
  // 1.5 at 17, then the tie 0.9 at 12, 14, 15: the earlier two win; 0.2 and 0.4 are below tau.
  EXPECT_EQ(mem.positions(), (std::vector<int32_t>{12, 14, 17}));
  EideticMemory few(rule(6, 3, 10, 0.8, Eviction::kFifo));
  const float low[6] = {0.1f, 0.9f, 0.2f, 0.3f, 0.0f, 0.7f};
  few.promote_chunk(low, 0);
  EXPECT_EQ(few.positions(), (std::vector<int32_t>{1}));  // only one passes tau
}

TEST(InnovationSelection, FifoEvictsTheOldestEntries) {
  EideticMemory mem(rule(4, 2, 3, 0.0, Eviction::kFifo));
  const float c0[4] = {5, 1, 4, 0}, c1[4] = {0, 9, 0, 8};
  mem.promote_chunk(c0, 0);  // 0, 2
  mem.promote_chunk(c1, 4);  // 5, 7 -> evict 0
  EXPECT_EQ(mem.positions(), (std::vector<int32_t>{2, 5, 7}));
}

TEST(InnovationSelection, LowestScoreEvictsTheLeastSurprisingWithTiesToTheOlder) {
  EideticMemory mem(rule(4, 2, 3, 0.0, Eviction::kLowestScore));
  const float c0[4] = {5, 1, 2, 0}, c1[4] = {0, 9, 0, 2}, c2[4] = {7, 0, 0, 0};
  mem.promote_chunk(c0, 0);  // {0:5, 2:2}
  mem.promote_chunk(c1, 4);  // + {5:9, 7:2} -> scores 5, 2, 9, 2: tie at 2, evict the older (2)
  EXPECT_EQ(mem.positions(), (std::vector<int32_t>{0, 5, 7}));
  mem.promote_chunk(c2, 8);  // candidates by score: 8 (7), then 9 (0, first of the zero-score ties)
  // held {0:5, 5:9, 7:2, 8:7, 9:0}: evict 9 (0), then 7 (2)
  EXPECT_EQ(mem.positions(), (std::vector<int32_t>{0, 5, 8}));
}

TEST(InnovationSelection, PlanSnapshotsTheMemoryBeforeEachChunkAndSkipsTheIncompleteOne) {
  const int W = 3, T = 11;  // chunks [0,3) [3,6) [6,9) [9,11): the last is incomplete
  std::vector<float> s(2 * T);
  for (int i = 0; i < 2 * T; ++i) s[i] = static_cast<float>((i * 7) % 5);
  const EideticPlan plan = plan_eidetic_memory(s.data(), 2, T, rule(W, 1, 2, 0.0, Eviction::kFifo));
  ASSERT_EQ(plan.positions.size(), 2u);
  // Sequence 0 scores: 0 2 4 | 1 3 0 | 2 4 1 | 3 0 -> promoted 2, then 4, then 7; m = 2 keeps the newest.
  EXPECT_EQ(plan.positions[0], (std::vector<std::vector<int32_t>>{{}, {2}, {2, 4}, {4, 7}}));
  // Sequence 1 (scores from index 11): 2 4 1 | 3 0 2 | 4 1 3 | 0 2 -> 1, then 3, then 6.
  EXPECT_EQ(plan.positions[1], (std::vector<std::vector<int32_t>>{{}, {1}, {1, 3}, {3, 6}}));
}

TEST(InnovationSelection, UnknownEvictionIsAClearError) {
  EXPECT_THROW(parse_eviction("random"), Error);
  EXPECT_EQ(parse_eviction("lowest_score"), Eviction::kLowestScore);
}

TEST(Innovation, ScoresAndGradientMatchTheDefinition) {
  const int B = 2, T = 7, D = 5;
  auto x = test::random_vector(B * T * D, 1), y = test::random_vector(B * T * D, 2),
       P = test::random_vector(D * D, 3);
  std::vector<float> s(B * T), e(B * T * D);
  const double mean = innovation_forward(s.data(), e.data(), x.data(), y.data(), P.data(), B, T, D);
  double total = 0.0;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      double sq = 0.0;
      for (int c = 0; c < D; ++c) {
        double xhat = 0.0;
        if (t > 0)
          for (int r = 0; r < D; ++r) xhat += y[(b * T + t - 1) * D + r] * P[r * D + c];
        const double err = x[(b * T + t) * D + c] - xhat;
        sq += err * err;
      }
      EXPECT_NEAR(s[b * T + t], sq / D, 1e-5 * (1 + sq / D));
      total += sq / D;
    }
  EXPECT_NEAR(mean, total / (B * T), 1e-5);
  const double lambda = 0.3;
  std::vector<float> dP(D * D, 0.0f), dy(B * T * D, 0.0f);
  innovation_backward(dP.data(), dy.data(), lambda, e.data(), y.data(), P.data(), B, T, D);
  auto f = [&] {
    return lambda * innovation_forward(s.data(), e.data(), x.data(), y.data(), P.data(), B, T, D);
  };
  test::expect_gradient(f, P.data(), dP.data(), P.size(), "dP", 25);
  test::expect_gradient(f, y.data(), dy.data(), y.size(), "dy", 40);
}

}  // namespace
}  // namespace bmojo
