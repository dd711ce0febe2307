#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

Config parse(const std::string& text) {
  Config c = config_from_json(nlohmann::json::parse(text));
  c.validate();
  return c;
}

TEST(Config, RoundTripsThroughJson) {
  Config c;
  c.model.layers = "AMMA";
  c.model.window = 16;
  c.train.lr = 2.5e-3;
  c.data.gap = 33;
  const Config d = config_from_json(config_to_json(c));
  EXPECT_EQ(config_to_json(d), config_to_json(c));
}

TEST(Config, UnknownKeysAreNamed) {
  EXPECT_NE(test::error_of([] { parse(R"({"model": {"d_modle": 64}})"); }).find("model.d_modle"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"optim": {}})"); }).find("optim"), std::string::npos);
}

TEST(Config, WrongTypesAreNamed) {
  EXPECT_NE(test::error_of([] { parse(R"({"model": {"d_model": "big"}})"); }).find("model.d_model"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"train": {"lr": true}})"); }).find("train.lr"), std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"model": []})"); }).find("model"), std::string::npos);
}

TEST(Config, ImpossibleShapesAreRejected) {
  EXPECT_NE(test::error_of([] { parse(R"({"model": {"d_model": 66, "n_heads": 4}})"); }).find("divisible"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              parse(R"({"model": {"n_heads": 4, "n_kv_heads": 3, "d_model": 64}})");
            }).find("n_kv_heads"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"model": {"layers": "AXA"}})"); }).find("'X'"), std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"model": {"layers": ""}})"); }).find("layers"), std::string::npos);
  EXPECT_NE(
      test::error_of([] { parse(R"({"data": {"seq_len": 8, "num_kv_pairs": 4}})"); }).find("num_kv_pairs"),
      std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"train": {"batch_size": 0}})"); }).find("train.batch_size"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse(R"({"train": {"stop_accuracy": 1.5}})"); }).find("train.stop_accuracy"),
            std::string::npos);
}

TEST(Config, OverridesApplyAndAreChecked) {
  Config c;
  apply_override(c, "model.layers=MAMA");
  apply_override(c, "train.lr=0.01");
  apply_override(c, "data.random_non_queries=true");
  EXPECT_EQ(c.model.layers, "MAMA");
  EXPECT_DOUBLE_EQ(c.train.lr, 0.01);
  EXPECT_TRUE(c.data.random_non_queries);
  EXPECT_THROW(apply_override(c, "model.nope=1"), Error);
  EXPECT_THROW(apply_override(c, "d_model=1"), Error);
  EXPECT_THROW(apply_override(c, "model.d_model=abc"), Error);
}

TEST(Config, ParameterCountFollowsTheShapes) {
  ModelConfig m;
  m.vocab_size = 100;
  m.d_model = 32;
  m.n_heads = 4;
  m.layers = std::string(1, 'A');  // (assigning a literal trips GCC 12's -Wrestrict false positive)
  m.d_ff = 0;
  // embedding + norm1 + wqkv + wo + norm_f
  EXPECT_EQ(Model(m).num_params(), 100u * 32 + 32 + 32 * 96 + 32 * 32 + 32);
  m.layers = std::string(1, 'M');
  const size_t C = 64, R = 2, N = 16;
  EXPECT_EQ(Model(m).num_params(),
            100u * 32 + 32 + 32 * 2 * C + C * 4 + C + C * (R + 2 * N) + R * C + C + C * N + C + C * 32 + 32);
}

}  // namespace
}  // namespace bmojo
