#include <gtest/gtest.h>

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
};

class ModelGradients : public ::testing::TestWithParam<Case> {};

TEST_P(ModelGradients, EveryParameterMatchesFiniteDifferences) {
  const Case k = GetParam();
  ModelConfig cfg = small_config(k.layers, k.window, k.d_ff);
  cfg.tie_embeddings = k.tied;
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
  auto loss = [&] { return model.forward(data.tokens.data(), data.targets.data(), data.B, data.T).loss; };
  for (const TensorSpec& t : model.layout().tensors())
    test::expect_gradient(loss, model.params() + t.offset, grads.data() + t.offset, t.numel, t.name, 12, 1e-2f, 3e-2);
}

INSTANTIATE_TEST_SUITE_P(Patterns, ModelGradients,
                         ::testing::Values(Case{"AA", 0, 0, true}, Case{"AM", 5, 24, true}, Case{"MA", 4, 0, false},
                                           Case{"MM", 0, 12, true}),
                         [](const auto& info) {
                           return info.param.layers + "_w" + std::to_string(info.param.window) + "_ff" +
                                  std::to_string(info.param.d_ff) + (info.param.tied ? "_tied" : "_untied");
                         });

TEST(Model, FastKernelsMatchReferenceKernels) {
  ModelConfig cfg = small_config("AMAM", 6, 20);
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
  const double lf = fast.forward(data.tokens.data(), data.targets.data(), data.B, data.T).loss;
  const double lr = ref.forward(data.tokens.data(), data.targets.data(), data.B, data.T).loss;
  EXPECT_NEAR(lf, lr, 1e-5 * std::abs(lr));
  for (const TensorSpec& t : fast.layout().tensors())
    EXPECT_LT(test::relative_error(fast.grads() + t.offset, ref.grads() + t.offset, t.numel), 1e-3) << t.name;
}

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
