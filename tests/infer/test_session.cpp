// Streaming inference (SPEC section 5): one token at a time, or prefill blocks of any size, gives the
// logits of the parallel forward; saved, restored and copied states continue exactly; the state of every
// bounded layer does not grow with the context; bad tokens and bad state files are clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <tuple>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/rng.hpp"
#include "infer/session.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

ModelConfig config_for(const std::string& layers, int window) {
  ModelConfig c;
  c.vocab_size = 37;
  c.d_model = 16;
  c.n_heads = 2;
  c.layers = layers;
  c.window = window;
  c.d_ff = 24;
  c.d_state = 4;
  c.eidetic_per_chunk = 2;
  c.eidetic_capacity = 3;
  c.eviction = "lowest_score";
  return c;
}

std::vector<float> parallel_logits(Model& m, const std::vector<int32_t>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, static_cast<int>(tokens.size()), out.data());
  return out;
}

std::vector<float> streamed_logits(const Model& m, const std::vector<int32_t>& tokens, int64_t block) {
  Session s(m);
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  s.feed(tokens.data(), static_cast<int64_t>(tokens.size()), out.data(), true, block);
  return out;
}

struct Case {
  std::string layers;
  int window;
  int kv_heads;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.layers << " W=" << c.window << " Hk=" << c.kv_heads;
}

class StreamingEqualsParallel : public ::testing::TestWithParam<Case> {};

TEST_P(StreamingEqualsParallel, ForEveryBlockSize) {
  const Case c = GetParam();
  ModelConfig cfg = config_for(c.layers, c.window);
  cfg.n_kv_heads = c.kv_heads;
  Model m(cfg);
  test::randomize_model(m, 11);
  const int W = std::max(c.window, 4);
  const int T = 5 * W + 3;  // several chunks, the last one incomplete
  const auto tokens = test::random_tokens(T, cfg.vocab_size, 5);
  const auto ref = parallel_logits(m, tokens);
  for (int64_t block : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{W}, int64_t{W + 1}, int64_t{T}}) {
    const auto got = streamed_logits(m, tokens, block);
    EXPECT_LT(test::relative_error(got, ref), 1e-4) << c.layers << " block " << block;
  }
}

INSTANTIATE_TEST_SUITE_P(Letters, StreamingEqualsParallel,
                         ::testing::Values(Case{"AA", 0, 0}, Case{"AA", 4, 0}, Case{"AA", 4, 1},
                                           Case{"MM", 0, 0}, Case{"FF", 4, 0}, Case{"FF", 5, 1},
                                           Case{"BB", 4, 0}, Case{"BB", 5, 1}, Case{"MAFB", 4, 0},
                                           Case{"BMAB", 3, 1}),
                         [](const auto& info) {
                           return info.param.layers + "_W" + std::to_string(info.param.window) + "_Hk" +
                                  std::to_string(info.param.kv_heads);
                         });

TEST(Streaming, UntiedFadingAndFifoEvictionMatchParallel) {
  ModelConfig cfg = config_for("BFB", 4);
  cfg.tie_fading = false;
  cfg.eviction = "fifo";
  cfg.tau = 0.5;
  Model m(cfg);
  test::randomize_model(m, 3);
  const auto tokens = test::random_tokens(41, cfg.vocab_size, 9);
  const auto ref = parallel_logits(m, tokens);
  EXPECT_LT(test::relative_error(streamed_logits(m, tokens, 1), ref), 1e-4);
  EXPECT_LT(test::relative_error(streamed_logits(m, tokens, 6), ref), 1e-4);
}

TEST(Streaming, EideticMemoryMatchesTheParallelPlan) {
  const ModelConfig cfg = config_for("BB", 4);
  Model m(cfg);
  test::randomize_model(m, 21);
  const int T = 23;  // chunks 0..4 complete
  const auto tokens = test::random_tokens(T, cfg.vocab_size, 2);
  parallel_logits(m, tokens);
  Session s(m);
  s.feed(tokens.data(), T, nullptr, false, 1);
  for (size_t l = 0; l < 2; ++l) {
    const auto& plan = m.eidetic_plan(l).positions.at(0);
    ASSERT_EQ(plan.size(), 6u);  // memory before each of the 6 chunks
    std::vector<int32_t> held;
    for (const EideticEntry& e : s.state().layers[l].memory.entries()) held.push_back(e.position);
    EXPECT_EQ(held, plan.back()) << "layer " << l;
    EXPECT_EQ(held.size(), 3u);
  }
}

TEST(Streaming, SavedRestoredAndCopiedStatesContinueExactly) {
  const ModelConfig cfg = config_for("BMAF", 4);
  Model m(cfg);
  test::randomize_model(m, 8);
  const auto tokens = test::random_tokens(50, cfg.vocab_size, 4);
  const int V = cfg.vocab_size;
  const int split = 17;

  Session whole(m);
  std::vector<float> ref(tokens.size() * V);
  whole.feed(tokens.data(), split, ref.data(), true, 5);
  whole.feed(tokens.data() + split, 50 - split, ref.data() + split * V, true, 5);

  Session first(m);
  std::vector<float> prefix(split * V);
  first.feed(tokens.data(), split, prefix.data(), true, 5);
  const std::string path = ::testing::TempDir() + "bmojo_state_test.bin";
  first.save(path);
  Session copy = first;  // a copy continues independently of the original

  Session restored(m);
  restored.load(path);
  EXPECT_EQ(restored.position(), split);
  std::vector<float> a((50 - split) * V), b((50 - split) * V);
  restored.feed(tokens.data() + split, 50 - split, a.data(), true, 5);
  copy.feed(tokens.data() + split, 50 - split, b.data(), true, 5);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i], ref[split * V + i]) << "restored, logit " << i;
    ASSERT_EQ(b[i], ref[split * V + i]) << "copy, logit " << i;
  }
  // The original was not disturbed by its copy.
  EXPECT_EQ(first.position(), split);
  std::remove(path.c_str());
}

TEST(Streaming, BoundedLayersKeepAConstantStateSize) {
  for (const std::string layers : {"AA", "MM", "FF", "BB"}) {
    ModelConfig cfg = config_for(layers, 4);
    Model m(cfg);
    test::randomize_model(m, 1);
    Session s(m);
    const auto tokens = test::random_tokens(600, cfg.vocab_size, 3);
    s.feed(tokens.data(), 100, nullptr, false, 1);
    const size_t at100 = s.state_bytes();
    std::vector<size_t> buffers;
    for (const LayerState& st : s.state().layers) buffers.push_back(st.kv.data.size() + st.kvf.data.size());
    s.feed(tokens.data() + 100, 500, nullptr, false, 1);
    EXPECT_EQ(s.state_bytes(), at100) << layers;
    EXPECT_GT(at100, 0u);
    for (size_t l = 0; l < buffers.size(); ++l)  // the buffers behind the state do not grow either
      EXPECT_EQ(s.state().layers[l].kv.data.size() + s.state().layers[l].kvf.data.size(), buffers[l])
          << layers;
  }
  // Full attention keeps every key: its cache grows.
  Model full(config_for("AA", 0));
  full.init_weights(1);
  Session s(full);
  const auto tokens = test::random_tokens(600, 37, 3);
  s.feed(tokens.data(), 100, nullptr, false, 1);
  const size_t at100 = s.state_bytes();
  s.feed(tokens.data() + 100, 500, nullptr, false, 1);
  EXPECT_GT(s.state_bytes(), at100);
}

TEST(Streaming, RejectsOutOfVocabularyTokens) {
  Model m(config_for("BB", 4));
  m.init_weights(1);
  Session s(m);
  const std::vector<int32_t> bad = {1, 2, 37};
  try {
    s.feed(bad.data(), 3, nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.position(), 0);
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Streaming, RejectsForeignTruncatedAndCorruptedStateFiles) {
  const ModelConfig cfg = config_for("BM", 4);
  Model m(cfg), other(cfg), bigger(config_for("BMA", 4));
  test::randomize_model(m, 1);
  test::randomize_model(other, 2);
  bigger.init_weights(1);
  const auto tokens = test::random_tokens(30, cfg.vocab_size, 4);
  Session s(m);
  s.feed(tokens.data(), 30, nullptr);
  const std::string path = ::testing::TempDir() + "bmojo_state_bad.bin";
  s.save(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto write = [&](const std::string& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << b;
  };

  Session other_session(other);
  EXPECT_NE(message_of([&] { other_session.load(path); }).find("different model"), std::string::npos);
  Session bigger_session(bigger);
  EXPECT_NE(message_of([&] { bigger_session.load(path); }).find("different model"), std::string::npos);

  Session fresh(m);
  write(bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(message_of([&] { fresh.load(path); }).find("truncated or corrupted"), std::string::npos);
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x40;
  write(flipped);
  EXPECT_NE(message_of([&] { fresh.load(path); }).find("truncated or corrupted"), std::string::npos);
  write("hello, this is not a state file at all");
  EXPECT_NE(message_of([&] { fresh.load(path); }).find("not a bmojo inference state"), std::string::npos);
  EXPECT_NE(message_of([&] { fresh.load(path + ".missing"); }).find("cannot open"), std::string::npos);
  EXPECT_EQ(fresh.position(), 0);  // a failed load leaves the session as it was
  std::remove(path.c_str());
}

}  // namespace
}  // namespace bmojo

namespace bmojo {
namespace {

// Hostile state files with valid checksums: every count, position and extent is checked against the model
// before use (a state that passed would make attention read outside its buffers).
TEST(Streaming, CraftedStatesWithValidChecksumsAreRefused) {
  Model m(config_for("AB", 4));
  test::randomize_model(m, 3);
  const auto tokens = test::random_tokens(13, 37, 4);
  Session s(m);
  s.feed(tokens.data(), 13, nullptr, false, 5);
  const std::string path = ::testing::TempDir() + "bmojo_crafted_state.bin";
  s.save(path);
  std::string good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // Offsets: magic 8, version 4, fingerprint 8, position 8 (at 20), layers 4, then layer 0 (A): kind 1,
  // conv count 8, scan count 8, then the key/value rows' first position (at 49) and their value count (57).
  const auto craft = [&](size_t offset, int64_t value) {
    std::string b = good;
    std::memcpy(b.data() + offset, &value, 8);
    const uint64_t sum = fnv1a64(b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &sum, 8);
    std::ofstream(path, std::ios::binary) << b;
  };
  int64_t first = 0;
  std::memcpy(&first, good.data() + 49, 8);
  ASSERT_EQ(first, 13 - 4) << "layout assumption: the A layer keeps the last W = 4 rows";
  const std::vector<std::tuple<size_t, int64_t, std::string>> cases = {
      {20, 14, "key/value rows do not match"},             // position moved past the rows held
      {20, 3, "more than this model can hold"},            // position before them
      {20, int64_t{1} << 62, "out of range"},              // absurd position
      {20, -1, "out of range"},                            // negative position
      {49, first - 1, "key/value rows do not match"},      // rows shifted one back
      {57, int64_t{1} << 61, "more than the file holds"},  // count that would overflow a byte size
      {57, 16, "key/value rows do not match"},             // fewer rows than the window needs
  };
  for (const auto& [offset, value, needle] : cases) {
    craft(offset, value);
    Session t(m);
    try {
      t.load(path);
      ADD_FAILURE() << "accepted a state with field at " << offset << " = " << value;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(t.position(), 0) << "a refused load leaves the session as it was";
  }
  std::remove(path.c_str());
}

// The fingerprint covers every parameter, the last weight of the last tensor included, and follows changes
// made through params().
TEST(Streaming, FingerprintCoversEveryParameter) {
  Model m(config_for("AB", 4));
  test::randomize_model(m, 3);
  const uint64_t before = m.fingerprint();
  EXPECT_EQ(m.fingerprint(), before) << "stable";
  const TensorSpec& last = m.layout().tensors().back();
  float* w = m.param(last.name);
  const float kept = w[last.numel - 1];
  w[last.numel - 1] += 1.0f;
  EXPECT_NE(m.fingerprint(), before) << "the last weight of '" << last.name << "' is covered";
  m.param(last.name)[last.numel - 1] = kept;
  EXPECT_EQ(m.fingerprint(), before);
  m.params()[m.layout().find("norm_f").offset + m.config().d_model - 1] *= 2.0f;
  EXPECT_NE(m.fingerprint(), before) << "the final norm's last weight is covered";
}

}  // namespace
}  // namespace bmojo
