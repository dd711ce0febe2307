#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

ModelConfig small_config(const std::string& layers, int window, int d_ff) {
  ModelConfig c;
  c.vocab_size = 29;
  c.d_model = 16;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.layers = layers;
  c.window = window;
  c.d_ff = d_ff;
  c.d_state = 4;
  c.expand = 2;
  return c;
}

struct Data {
  int B, T;
  std::vector<int32_t> tokens, targets;
  Data(int b, int t, int V, uint64_t seed) : B(b), T(t) {
    Rng rng(seed);
    for (int i = 0; i < B * T; ++i) {
      tokens.push_back(static_cast<int32_t>(rng.below(V)));
      targets.push_back(rng.below(3) == 0 ? kIgnoreLabel : static_cast<int32_t>(rng.below(V)));
    }
  }
};

struct Case {
  std::string layers;
  int window, d_ff;
  bool tied;
  bool tie_fading = true;
  std::string eviction = "fifo";
  double lambda_innov = 0.0;
};

// The innovation score compares a B layer's input x under stop-gradient (SPEC section 4): the analytic
// gradient deliberately omits the path through x, which finite differences of the objective include. With
// lambda_innov > 0, tensors upstream of a B layer's input are therefore checked in the lambda = 0 cases
// only; the predictors P are never upstream of anything but their own score.
bool upstream_of_innovation_input(const std::string& name, const ModelConfig& cfg) {
  if (cfg.lambda_innov == 0.0 || name.find("innovation.P") != std::string::npos) return false;
  const size_t last_b = cfg.layers.rfind('B');
  if (last_b == std::string::npos) return false;
  if (name == "embedding") return true;
  for (size_t i = 0; i < last_b; ++i)
    if (name.rfind("layers." + std::to_string(i) + ".", 0) == 0) return true;
  return name == "layers." + std::to_string(last_b) + ".norm1";
}

class ModelGradients : public ::testing::TestWithParam<Case> {};

TEST_P(ModelGradients, EveryParameterMatchesFiniteDifferences) {
  const Case k = GetParam();
  ModelConfig cfg = small_config(k.layers, k.window, k.d_ff);
  cfg.tie_embeddings = k.tied;
  cfg.tie_fading = k.tie_fading;
  cfg.eviction = k.eviction;
  cfg.eidetic_per_chunk = std::min(2, std::max(1, k.window));
  cfg.eidetic_capacity = 3;  // fills after two chunks, then evicts
  cfg.lambda_innov = k.lambda_innov;
  Model model(cfg);
  model.init_weights(3);
  // Larger weights than the 0.02 init so that every path carries gradient well above fp32 noise.
  Rng rng(4);
  for (const TensorSpec& t : model.layout().tensors()) {
    if (t.name.find("A_log") != std::string::npos || t.name.find("dt_bias") != std::string::npos) continue;
    float* p = model.params() + t.offset;
    for (size_t i = 0; i < t.numel; ++i) p[i] += static_cast<float>(rng.normal() * 0.2);
  }
  Data data(2, 13, cfg.vocab_size, 5);
  model.zero_grads();
  model.forward(data.tokens.data(), data.targets.data(), data.B, data.T);
  model.backward();
  std::vector<float> grads(model.grads(), model.grads() + model.layout().slab_size());
  model.set_frozen_selection(
      true);  // the choice of entries is discrete: differentiate through the chosen ones
  // The objective: cross-entropy plus the B layers' innovation loss.
  auto loss = [&] {
    return model.forward(data.tokens.data(), data.targets.data(), data.B, data.T).objective();
  };
  int checked = 0;
  for (const TensorSpec& t : model.layout().tensors()) {
    if (upstream_of_innovation_input(t.name, cfg)) continue;
    test::expect_gradient(loss, model.params() + t.offset, grads.data() + t.offset, t.numel, t.name, 12,
                          1e-2f, 3e-2);
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, ModelGradients,
    ::testing::Values(Case{"AA", 0, 0, true}, Case{"AM", 5, 24, true}, Case{"MA", 4, 0, false},
                      Case{"MM", 0, 12, true}, Case{"FF", 3, 0, true}, Case{"FA", 5, 12, true, false},
                      Case{"BB", 3, 0, true}, Case{"BM", 2, 12, false, false, "lowest_score"},
                      Case{"BB", 3, 0, true, true, "fifo", 0.5},
                      Case{"MB", 4, 12, false, false, "lowest_score", 0.5}),
    [](const auto& info) {
      const Case& c = info.param;
      return c.layers + "_w" + std::to_string(c.window) + "_ff" + std::to_string(c.d_ff) +
             (c.tied ? "_tied" : "_untied") + (c.tie_fading ? "" : "_untiedfading") +
             (c.eviction == "fifo" ? "" : "_lowestscore") + (c.lambda_innov > 0 ? "_innovation" : "");
    });

class KernelPaths : public ::testing::TestWithParam<std::string> {};

TEST_P(KernelPaths, FastKernelsMatchReferenceKernels) {
  ModelConfig cfg = small_config(GetParam(), 6, 20);
  cfg.eidetic_per_chunk = 3;
  cfg.eidetic_capacity = 7;
  cfg.d_model = 32;
  Model fast(cfg), ref(cfg);
  fast.init_weights(7);
  ref.init_weights(7);
  ref.set_reference_kernels(true);
  Data data(3, 75, cfg.vocab_size, 8);
  for (Model* m : {&fast, &ref}) {
    m->zero_grads();
    m->forward(data.tokens.data(), data.targets.data(), data.B, data.T);
    m->backward();
  }
  const double lf = fast.forward(data.tokens.data(), data.targets.data(), data.B, data.T).objective();
  const double lr = ref.forward(data.tokens.data(), data.targets.data(), data.B, data.T).objective();
  EXPECT_NEAR(lf, lr, 1e-5 * std::abs(lr));
  for (const TensorSpec& t : fast.layout().tensors())
    EXPECT_LT(test::relative_error(fast.grads() + t.offset, ref.grads() + t.offset, t.numel), 1e-3) << t.name;
}

INSTANTIATE_TEST_SUITE_P(Patterns, KernelPaths, ::testing::Values("AMAM", "FBAM", "BB"));

TEST(Model, LogitsAgreeWithTheLossPath) {
  ModelConfig cfg = small_config("AM", 0, 0);
  Model model(cfg);
  model.init_weights(9);
  Data data(2, 10, cfg.vocab_size, 10);
  std::vector<float> logits(static_cast<size_t>(data.B) * data.T * cfg.vocab_size);
  model.logits(data.tokens.data(), data.B, data.T, logits.data());
  double sum = 0.0;
  int n = 0;
  for (int i = 0; i < data.B * data.T; ++i) {
    if (data.targets[i] == kIgnoreLabel) continue;
    const float* z = logits.data() + static_cast<size_t>(i) * cfg.vocab_size;
    double mx = z[0], s = 0.0;
    for (int c = 0; c < cfg.vocab_size; ++c) mx = std::max<double>(mx, z[c]);
    for (int c = 0; c < cfg.vocab_size; ++c) s += std::exp(z[c] - mx);
    sum += std::log(s) + mx - z[data.targets[i]];
    ++n;
  }
  EXPECT_NEAR(model.forward(data.tokens.data(), data.targets.data(), data.B, data.T).loss, sum / n, 1e-5);
}

TEST(Model, CausalityFutureTokensDoNotChangePastLogits) {
  ModelConfig cfg = small_config("MAM", 0, 16);
  Model model(cfg);
  model.init_weights(11);
  Data data(1, 20, cfg.vocab_size, 12);
  const int V = cfg.vocab_size;
  std::vector<float> a(20 * V), b(20 * V);
  model.logits(data.tokens.data(), 1, 20, a.data());
  data.tokens[15] = (data.tokens[15] + 1) % V;
  model.logits(data.tokens.data(), 1, 20, b.data());
  for (int i = 0; i < 15 * V; ++i) ASSERT_EQ(a[i], b[i]) << "position " << i / V;
  bool changed = false;
  for (int i = 15 * V; i < 20 * V; ++i) changed = changed || a[i] != b[i];
  EXPECT_TRUE(changed);
}

TEST(Model, OutOfVocabularyTokensAreRejected) {
  Model model(small_config("A", 0, 0));
  const int32_t tokens[3] = {1, 29, 2};
  const int32_t targets[3] = {kIgnoreLabel, 3, 4};
  EXPECT_THROW(model.forward(tokens, targets, 1, 3), Error);
}

}  // namespace
}  // namespace bmojo
