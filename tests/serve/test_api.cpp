// The /v1/completions request checks: what a valid body becomes, and the status, field and message of
// each kind of bad one.
#include <gtest/gtest.h>

#include "serve/api.hpp"

namespace bmojo {
namespace {

using nlohmann::json;

std::optional<CompletionRequest> parse(const std::string& body, ApiError& e) {
  return parse_completion_request(body, "m", RequestLimits{}, e);
}

TEST(ServeApi, AValidBodyBecomesARequest) {
  ApiError e;
  const auto r =
      parse(R"({"model": "m", "prompt": [1, 2, 3], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9,
                           "top_k": 7, "seed": -3, "stop": ["a", "bc"], "n": 2, "logprobs": 2, "stream": true,
                           "stream_options": {"include_usage": true}, "user": "u", "presence_penalty": 0})",
            e);
  ASSERT_TRUE(r) << e.message;
  EXPECT_FALSE(r->prompt_is_text);
  EXPECT_EQ(r->prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r->max_tokens, 5);
  EXPECT_DOUBLE_EQ(r->sampling.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r->sampling.top_p, 0.9);
  EXPECT_EQ(r->sampling.top_k, 7);
  EXPECT_TRUE(r->seeded);
  EXPECT_EQ(r->sampling.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(r->stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(r->n, 2);
  EXPECT_EQ(r->logprobs, 2);
  EXPECT_TRUE(r->stream && r->include_usage);
  // Defaults: OpenAI's (16 tokens, temperature 1), one prompt in a list, integral floats accepted.
  const auto d = parse(R"({"model": "m", "prompt": ["text"], "max_tokens": 3.0})", e);
  ASSERT_TRUE(d) << e.message;
  EXPECT_TRUE(d->prompt_is_text);
  EXPECT_EQ(d->prompt_text, "text");
  EXPECT_EQ(d->max_tokens, 3);
  EXPECT_DOUBLE_EQ(d->sampling.temperature, 1.0);
  EXPECT_FALSE(d->seeded);
  EXPECT_EQ(d->logprobs, -1);
  EXPECT_EQ(parse(R"({"model": "m", "prompt": "x"})", e)->max_tokens, 16);
}

TEST(ServeApi, EachBadFieldIsNamed) {
  const std::vector<std::tuple<std::string, int, std::string>> cases = {
      {R"({"prompt": "x"})", 400, "model"},
      {R"({"model": 3, "prompt": "x"})", 400, "model"},
      {R"({"model": "other", "prompt": "x"})", 404, "model"},
      {R"({"model": "m"})", 400, "prompt"},
      {R"({"model": "m", "prompt": []})", 400, "prompt"},
      {R"({"model": "m", "prompt": [1, -1]})", 400, "prompt"},
      {R"({"model": "m", "prompt": [1, 2.5]})", 400, "prompt"},
      {R"({"model": "m", "prompt": [1, 4294967296]})", 400, "prompt"},
      {R"({"model": "m", "prompt": ["a", "b"]})", 400, "prompt"},
      {R"({"model": "m", "prompt": {"a": 1}})", 400, "prompt"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 4097})", 400, "max_tokens"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 18446744073709551615})", 400, "max_tokens"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 1.5})", 400, "max_tokens"},
      {R"({"model": "m", "prompt": "x", "max_tokens": true})", 400, "max_tokens"},
      {R"({"model": "m", "prompt": "x", "temperature": -0.1})", 400, "temperature"},
      {R"({"model": "m", "prompt": "x", "top_p": 0})", 400, "top_p"},
      {R"({"model": "m", "prompt": "x", "top_k": -2})", 400, "top_k"},
      {R"({"model": "m", "prompt": "x", "n": 0})", 400, "n"},
      {R"({"model": "m", "prompt": "x", "n": 9})", 400, "n"},
      {R"({"model": "m", "prompt": "x", "logprobs": 21})", 400, "logprobs"},
      {R"({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", 400, "stop"},
      {R"({"model": "m", "prompt": "x", "stop": [""]})", 400, "stop"},
      {R"({"model": "m", "prompt": "x", "stop": 3})", 400, "stop"},
      {R"({"model": "m", "prompt": "x", "stream": "yes"})", 400, "stream"},
      {R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}})", 400, "stream_options"},
      {R"({"model": "m", "prompt": "x", "echo": true, "logprobs": 1})", 400, "echo"},
      {R"({"model": "m", "prompt": "x", "presence_penalty": 1})", 400, "presence_penalty"},
      {R"({"model": "m", "prompt": "x", "best_of": 3})", 400, "best_of"},
      {R"({"model": "m", "prompt": "x", "logit_bias": {"1": 2}})", 400, "logit_bias"},
      {R"({"model": "m", "prompt": "x", "mystery": 1})", 400, "mystery"},
  };
  for (const auto& [body, status, param] : cases) {
    ApiError e;
    EXPECT_FALSE(parse(body, e)) << body;
    EXPECT_EQ(e.status, status) << body;
    EXPECT_EQ(e.param, param) << body;
    EXPECT_FALSE(e.message.empty()) << body;
    const json j = e.body();
    EXPECT_EQ(j["error"]["message"], e.message);
    EXPECT_EQ(j["error"]["param"], param);
  }
}

TEST(ServeApi, NestingIsCountedBeforeParsing) {
  EXPECT_EQ(json_nesting_depth(R"({"a": [1, {"b": "[[[{{{"}]})"), 3);
  EXPECT_EQ(json_nesting_depth(R"("\"[")"), 0);
  ApiError e;
  EXPECT_FALSE(parse(std::string(100000, '[') + std::string(100000, ']'), e));
  EXPECT_NE(e.message.find("nests deeper"), std::string::npos);
  EXPECT_FALSE(parse("{\"model\": \"m\", \"prompt\": \"\xff\"", e));
  EXPECT_FALSE(parse("", e));
  EXPECT_FALSE(parse("null", e));
}

}  // namespace
}  // namespace bmojo
