// Streaming inference (SPEC section 5): one token at a time, or prefill blocks of any size, gives the
// logits of the parallel forward; saved, restored and copied states continue exactly; the state of every
// bounded layer does not grow with the context; bad tokens and bad state files are clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <tuple>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/rng.hpp"
#include "core/safetensors.hpp"
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

ModelConfig config_of(const Case& c) {
  ModelConfig cfg = config_for(c.layers, c.window);
  cfg.n_kv_heads = c.kv_heads;
  return cfg;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.layers + "_W" + std::to_string(info.param.window) + "_Hk" +
         std::to_string(info.param.kv_heads);
}

class StreamingEqualsParallel : public ::testing::TestWithParam<Case> {};

TEST_P(StreamingEqualsParallel, ForEveryBlockSize) {
  const Case c = GetParam();
  const ModelConfig cfg = config_of(c);
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
                         case_name);

// A batch of sequences advanced together, each at its own position with blocks of its own size per step
// (decode and prefill mixed in one step), sequences joining late and leaving early: every sequence gets,
// at every step, the logits of its own parallel forward at that position.
class BatchEqualsParallel : public ::testing::TestWithParam<Case> {};

TEST_P(BatchEqualsParallel, PerSequenceWithJoinsAndLeaves) {
  const Case c = GetParam();
  const ModelConfig cfg = config_of(c);
  Model m(cfg);
  test::randomize_model(m, 13);
  const int V = cfg.vocab_size, W = std::max(c.window, 4);
  const int T = 5 * W + 3;
  // Sequence s joins at step join[s] and leaves after leave_at[s] tokens.
  const int join_at[4] = {0, 3, 1, 6};
  const int leave_at[4] = {T, T, 2 * W + 1, T};
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> ref;
  for (int q = 0; q < 4; ++q) {
    tokens.push_back(test::random_tokens(T, V, 40 + q));
    ref.push_back(parallel_logits(m, tokens[q]));
  }
  BatchSession batch(m);
  int64_t id[4] = {-1, -1, -1, -1};
  int fed[4] = {0, 0, 0, 0};
  Rng rng(17);
  double worst = 0.0;
  int checked = 0;
  for (int step = 0; step < 200; ++step) {
    std::vector<BatchSession::Input> inputs;
    std::vector<int> who;
    for (int q = 0; q < 4; ++q) {
      if (step == join_at[q]) id[q] = batch.join();
      if (id[q] < 0 || !batch.contains(id[q])) continue;
      if (fed[q] >= leave_at[q]) {
        batch.leave(id[q]);
        continue;
      }
      const int n = std::min(leave_at[q] - fed[q], 1 + static_cast<int>(rng.below(step % 3 == 0 ? 7 : 2)));
      inputs.push_back({id[q], tokens[q].data() + fed[q], n});
      who.push_back(q);
    }
    if (inputs.empty()) break;
    std::vector<float> logits(inputs.size() * V);
    batch.step(inputs, logits.data());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const int q = who[i];
      fed[q] += static_cast<int>(inputs[i].n);
      EXPECT_EQ(batch.state(id[q]).position, fed[q]);
      const std::vector<float> got(logits.begin() + i * V, logits.begin() + (i + 1) * V);
      const std::vector<float> want(ref[q].begin() + (fed[q] - 1) * V, ref[q].begin() + fed[q] * V);
      worst = std::max(worst, test::relative_error(got, want));
      ++checked;
    }
  }
  for (int q = 0; q < 4; ++q) EXPECT_EQ(fed[q], leave_at[q]) << "sequence " << q << " was fed to its end";
  EXPECT_FALSE(batch.contains(id[2])) << "the early leaver left";
  EXPECT_GT(checked, 20);
  EXPECT_LT(worst, 1e-4) << c.layers;
}

INSTANTIATE_TEST_SUITE_P(Letters, BatchEqualsParallel,
                         ::testing::Values(Case{"AA", 0, 0}, Case{"AA", 4, 1}, Case{"MM", 0, 0},
                                           Case{"FF", 5, 1}, Case{"BB", 4, 0}, Case{"MAFB", 4, 0},
                                           Case{"BMAB", 3, 1}),
                         case_name);

// A sequence's state saved from a batch and joined back (to the same batch) continues exactly like the
// original, beside it; a Session's state joins a batch the same way.
TEST(Batch, SavedSequenceRejoinsAndContinuesLikeTheOriginal) {
  const ModelConfig cfg = config_for("BMAF", 4);
  Model m(cfg);
  test::randomize_model(m, 8);
  const int V = cfg.vocab_size;
  const auto tokens = test::random_tokens(40, V, 4);
  BatchSession batch(m);
  const int64_t a = batch.join(), other = batch.join();
  batch.step({{a, tokens.data(), 17}, {other, tokens.data() + 3, 5}}, nullptr);
  const std::string path = ::testing::TempDir() + "bmojo_batch_state.safetensors";
  batch.save(a, path);
  const int64_t b = batch.join_from_file(path);
  Session single(m);
  single.feed(tokens.data(), 17, nullptr);
  const int64_t c = batch.join(single.state());
  EXPECT_EQ(batch.state(b).position, 17);
  for (int t = 17; t < 40; ++t) {
    std::vector<float> logits(4 * V), alone(V);
    batch.step({{a, &tokens[t], 1}, {b, &tokens[t], 1}, {other, &tokens[t], 1}, {c, &tokens[t], 1}},
               logits.data());
    single.feed(&tokens[t], 1, alone.data());
    const std::vector<float> la(logits.begin(), logits.begin() + V),
        lb(logits.begin() + V, logits.begin() + 2 * V), lc(logits.begin() + 3 * V, logits.end());
    EXPECT_LT(test::relative_error(lb, la), 1e-6) << "rejoined, position " << t;
    // The session's first 17 tokens went through the kernels as a block of their own, the original's
    // beside another sequence's 5 (other matmul shapes, so other rounding): equal to float rounding, which
    // reaches 3e-6 in clang's sanitizer build; a wrong state would be off by orders of magnitude more.
    EXPECT_LT(test::relative_error(lc, la), 1e-5) << "from a session, position " << t;
    EXPECT_LT(test::relative_error(alone, la), 1e-5) << "the session alone, position " << t;
  }
  std::remove(path.c_str());
}

// States that keep their attention keys and values as bf16 (--kv-storage bf16): for every layer kind the
// logits stay within the rounding's reach of the parallel forward (and do move); the key/value rows take
// half the bytes and a decode step reads fewer; a batch holds bf16 and fp32 sequences side by side, each
// with its own single-session logits; a bf16 state saves, loads (as bf16) and continues exactly.
TEST(Batch, Bf16KeysAndValuesStayCloseAndSaveExactly) {
  for (const auto& [layers, window] :
       std::vector<std::pair<std::string, int>>{{"AA", 0}, {"AA", 4}, {"FF", 4}, {"BB", 4}, {"MAFB", 4}}) {
    const ModelConfig cfg = config_for(layers, window);
    Model m(cfg);
    test::randomize_model(m, 17);
    const int V = cfg.vocab_size, W = std::max(window, 4), T = 5 * W + 3;
    const auto tokens = test::random_tokens(T + 8, V, 6);
    const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + T);
    const auto ref = parallel_logits(m, prompt);
    for (int64_t block : {int64_t{1}, int64_t{W + 1}}) {
      Session s(m, KvStorage::bf16);
      std::vector<float> got(ref.size());
      s.feed(prompt.data(), T, got.data(), true, block);
      const double err = test::relative_error(got, ref);
      EXPECT_LT(err, 2e-2) << layers << " W " << window << " block " << block;
      EXPECT_GT(err, 1e-7) << layers << ": the keys and values must really be rounded";
    }
    Session half(m, KvStorage::bf16), full(m);
    half.feed(prompt.data(), T, nullptr);
    full.feed(prompt.data(), T, nullptr);
    for (size_t l = 0; l < cfg.layers.size(); ++l) {
      const LayerState &h = half.state().layers[l], &f = full.state().layers[l];
      EXPECT_EQ(2 * h.kv.bytes(), f.kv.bytes()) << layers << " layer " << l;
      EXPECT_EQ(2 * h.kvf.bytes(), f.kvf.bytes()) << layers << " layer " << l;
      EXPECT_EQ(h.memory.entries().size(), f.memory.entries().size()) << layers << " layer " << l;
      EXPECT_EQ(2 * h.memory.row_bytes(), f.memory.row_bytes()) << layers << " layer " << l;
      if (cfg.layers[l] == 'B') {
        EXPECT_GT(h.memory.row_bytes(), 0u) << layers << ": entries to round";
      }
    }
    EXPECT_LT(half.state().decode_read_bytes(), full.state().decode_read_bytes()) << layers;

    // One batch, a bf16 sequence and an fp32 one joined from a session's state, each as its single session.
    BatchSession batch(m, KvStorage::bf16);
    const int64_t a = batch.join(), b = batch.join(full.state());
    batch.step({{a, prompt.data(), T}}, nullptr);
    const std::string path = ::testing::TempDir() + "bmojo_bf16_state.safetensors";
    batch.save(a, path);
    Session loaded(m);  // an fp32 session: the file's storage wins
    loaded.load(path);
    EXPECT_TRUE(loaded.state().layers[0].kv.bf16() || loaded.state().layers[0].kv.width == 0);
    for (int t = T; t < T + 8; ++t) {
      std::vector<float> logits(2 * V), la(V), lf(V), ll(V);
      batch.step({{a, &tokens[t], 1}, {b, &tokens[t], 1}}, logits.data());
      half.feed(&tokens[t], 1, la.data());
      full.feed(&tokens[t], 1, lf.data());
      loaded.feed(&tokens[t], 1, ll.data());
      const std::vector<float> ba(logits.begin(), logits.begin() + V), bb(logits.begin() + V, logits.end());
      EXPECT_LT(test::relative_error(ba, la), 1e-5) << layers << " bf16 in the batch, position " << t;
      EXPECT_LT(test::relative_error(bb, lf), 1e-5) << layers << " fp32 in the batch, position " << t;
      EXPECT_LT(test::relative_error(ll, la), 1e-5) << layers << " loaded bf16 state, position " << t;
    }
    std::remove(path.c_str());
  }
}

TEST(Batch, RejectsBadSteps) {
  Model m(config_for("AB", 4));
  test::randomize_model(m, 1);
  BatchSession batch(m);
  const int64_t a = batch.join();
  const int32_t ok[2] = {1, 2}, bad[1] = {37};
  EXPECT_NE(test::error_of([&] {
              batch.step({{a, ok, 1}, {a, ok, 1}}, nullptr);
            }).find("twice"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              batch.step({{a + 1, ok, 1}}, nullptr);
            }).find("no sequence"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              batch.step({{a, ok, 0}}, nullptr);
            }).find("a step takes 1 to"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              batch.step({{a, bad, 1}}, nullptr);
            }).find("outside the vocabulary"),
            std::string::npos);
  EXPECT_EQ(batch.state(a).position, 0) << "a refused step changes nothing";
  EXPECT_NE(test::error_of([&] { batch.leave(a + 5); }).find("no sequence"), std::string::npos);
}

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

// What the next decode step reads of a sequence's state, the byte count infer-bench's batching bound rests
// on: here W = 4, one row of keys and values 2 x 16 floats = 128 bytes, m = 3.
TEST(Streaming, DecodeReadBytesCountWhatTheNextStepReads) {
  const double row = 2 * 16 * sizeof(float);
  const auto ssm_bytes = [](const LayerState& l) {
    return static_cast<double>((l.ssm.conv.size() + l.ssm.ssm.size()) * sizeof(float));
  };
  for (const std::string layers : {"A", "M", "F", "B"}) {
    Model m(config_for(layers, 4));
    test::randomize_model(m, 1);
    Session s(m);
    const auto tokens = test::random_tokens(100, 37, 3);
    s.feed(tokens.data(), 1, nullptr);
    const LayerState& l = s.state().layers[0];
    // After one token: the query at t = 1 sees one earlier key (position 0) and no fading key yet.
    const double early = s.state().decode_read_bytes();
    s.feed(tokens.data() + 1, 99, nullptr, false, 7);
    const double late = s.state().decode_read_bytes();
    // At t = 100: keys of [97, 99] (W - 1 rows; t's own is computed), fading rows of [93, 96] (W of the
    // 2W kept), the SSM state; B adds y_{t-1} and the chunk's query sum (16 floats each), its full memory
    // (m rows) and the chunk's W rows and scores once per W tokens.
    if (layers == "A") {
      EXPECT_EQ(early, row);
      EXPECT_EQ(late, 3 * row);
    } else if (layers == "M") {
      EXPECT_GT(ssm_bytes(l), 0.0);
      EXPECT_EQ(early, ssm_bytes(l));
      EXPECT_EQ(late, ssm_bytes(l));
    } else if (layers == "F") {
      EXPECT_EQ(early, ssm_bytes(l) + row);
      EXPECT_EQ(late, ssm_bytes(l) + 3 * row + 4 * row);
    } else {
      ASSERT_EQ(l.memory.entries().size(), 3u);
      const double fixed = ssm_bytes(l) + 2 * 16 * sizeof(float) + (4 * row + 4 * sizeof(float)) / 4;
      EXPECT_EQ(late, fixed + 3 * row + 4 * row + 3 * row);
    }
    // Bounded: more tokens do not change it.
    s.feed(tokens.data(), 50, nullptr);
    EXPECT_EQ(s.state().decode_read_bytes(), late) << layers;
  }
  // Full attention reads every earlier key: 100 rows at t = 100.
  Model full(config_for("A", 0));
  full.init_weights(1);
  Session s(full);
  const auto tokens = test::random_tokens(100, 37, 3);
  s.feed(tokens.data(), 100, nullptr);
  EXPECT_EQ(s.state().decode_read_bytes(), 100 * row);
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
  EXPECT_NE(test::error_of([&] { other_session.load(path); }).find("different model"), std::string::npos);
  Session bigger_session(bigger);
  EXPECT_NE(test::error_of([&] { bigger_session.load(path); }).find("different model"), std::string::npos);

  Session fresh(m);
  write(bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(test::error_of([&] { fresh.load(path); }).find("truncated or corrupted"), std::string::npos);
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x40;
  write(flipped);
  EXPECT_NE(test::error_of([&] { fresh.load(path); }).find("truncated or corrupted"), std::string::npos);
  write("hello, this is not a state file at all");
  EXPECT_NE(test::error_of([&] { fresh.load(path); }).find("not a bmojo inference state"), std::string::npos);
  EXPECT_NE(test::error_of([&] { fresh.load(path + ".missing"); }).find("cannot open"), std::string::npos);
  EXPECT_EQ(fresh.position(), 0);  // a failed load leaves the session as it was
  std::remove(path.c_str());
}

}  // namespace
}  // namespace bmojo

namespace bmojo {
namespace {

// A state file's tensors and metadata, editable and written back with a valid checksum: the edits a hostile
// file could make (core/safetensors.hpp recomputes the checksum), each of which must be refused by name.
struct EditableState {
  struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> f;
    std::vector<int64_t> i;
    bool i64 = false;
  };
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;

  explicit EditableState(const std::string& path) {
    const SafetensorsFile file = read_safetensors(path, "state file");
    for (const auto& [name, t] : file.tensors) {
      Tensor x;
      x.shape = t.shape;
      x.i64 = t.i64;
      if (t.i64)
        x.i = file.i64_values(t);
      else
        x.f.assign(file.data(t), file.data(t) + t.numel());
      tensors[name] = x;
    }
    for (auto it = file.metadata.begin(); it != file.metadata.end(); ++it)
      if (it.key() != kChecksumKey) metadata[it.key()] = it.value().get<std::string>();
  }
  void write(const std::string& path) const {
    std::vector<SafetensorsItem> items;
    for (const auto& [name, t] : tensors)
      items.push_back({name, t.shape, t.i64 ? nullptr : t.f.data(), t.i64 ? t.i.data() : nullptr});
    write_safetensors(path, items, metadata, "state file");
  }
};

// Hostile state files with valid checksums: every field, count, position and extent is checked against
// the model before use (a state that passed would make attention read outside its buffers).
TEST(Streaming, EditedStateFieldsAreRefused) {
  Model m(config_for("AB", 4));
  test::randomize_model(m, 3);
  const auto tokens = test::random_tokens(13, 37, 4);
  Session s(m);
  s.feed(tokens.data(), 13, nullptr, false, 5);
  ASSERT_FALSE(s.state().layers[1].memory.entries().empty()) << "the B layer must hold entries to edit";
  const std::string path = ::testing::TempDir() + "bmojo_edited_state.safetensors";
  s.save(path);
  const EditableState good(path);
  ASSERT_EQ(good.tensors.at("layer0.kv").shape, (std::vector<int64_t>{4, 32})) << "A keeps the last W rows";
  using Edit = std::function<void(EditableState&)>;
  const std::vector<std::pair<Edit, std::string>> cases = {
      // Positions the rows held do not reach (a later one with the same row counts is a well-formed state).
      {[](EditableState& e) { e.metadata["position"] = "2"; }, "has shape"},
      {[](EditableState& e) { e.metadata["position"] = "3"; }, "has shape"},
      {[](EditableState& e) { e.metadata["position"] = "4611686018427387904"; }, "out of range"},
      {[](EditableState& e) { e.metadata["position"] = "-1"; }, "not a count"},
      {[](EditableState& e) { e.metadata["position"] = "12abc"; }, "not a count"},
      {[](EditableState& e) { e.metadata["format_version"] = "2"; }, "format version"},
      {[](EditableState& e) { e.metadata["layers"] = "AA"; }, "holds layers"},
      {[](EditableState& e) { e.metadata["fingerprint"] = "0123456789abcdef"; }, "different model"},
      {[](EditableState& e) { e.metadata.erase("format"); }, "not a bmojo inference state"},
      {[](EditableState& e) { e.metadata["kv_storage"] = "f16"; }, "unknown key/value storage 'f16'"},
      {[](EditableState& e) {
         e.metadata["kv_storage"] = "bf16";
         e.tensors.at("layer0.kv").f[3] = 3.4e38f;  // a float, but beyond bf16's largest value
       },
       "beyond bf16's range"},
      {[](EditableState& e) {
         auto& kv = e.tensors.at("layer0.kv");
         kv.shape[0] -= 1;
         kv.f.resize(kv.f.size() - 32);
       },
       "has shape"},
      {[](EditableState& e) { e.tensors.at("layer1.chunk_kv").f[5] = std::nanf(""); }, "non-finite"},
      {[](EditableState& e) { e.tensors.erase("layer1.ssm_scan"); }, "is missing"},
      {[](EditableState& e) { e.tensors["layer1.extra"] = e.tensors.at("layer1.y_prev"); }, "not part of"},
      {[](EditableState& e) {
         auto& p = e.tensors.at("layer1.memory_positions");
         p.f.assign(p.i.begin(), p.i.end());
         p.i.clear();
         p.i64 = false;
       },
       "expected I64"},
      {[](EditableState& e) { e.tensors.at("layer1.memory_positions").i.back() = 12; }, "completed chunks"},
      {[](EditableState& e) { e.tensors.at("layer1.memory_positions").i.front() = -5; }, "completed chunks"},
      {[](EditableState& e) {
         auto& p = e.tensors.at("layer1.memory_positions").i;
         std::swap(p.front(), p.back());
       },
       "completed chunks"},
      {[](EditableState& e) {
         // More entries than m, with matching scores and rows.
         for (const char* n : {"layer1.memory_positions", "layer1.memory_scores", "layer1.memory_kv"}) {
           auto& t = e.tensors.at(n);
           const size_t row = t.i64 ? 1 : (t.shape.size() == 2 ? 32 : 1);
           for (int k = 0; k < 3; ++k) {
             t.shape[0] += 1;
             if (t.i64)
               t.i.push_back(t.i.back() + 1 + k);
             else
               t.f.insert(t.f.end(), row, 0.5f);
           }
         }
       },
       "at most 3 rows"},
      {[](EditableState& e) {
         e.tensors["layer1.retrieved0_positions"] = {{1}, {}, {20}, true};
         e.tensors["layer1.retrieved0_kv"] = {{1, 16}, std::vector<float>(16, 0.0f), {}, false};
         e.tensors["layer1.retrieved1_positions"] = {{0}, {}, {}, true};
         e.tensors["layer1.retrieved1_kv"] = {{0, 16}, {}, {}, false};
       },
       "not of the past"},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    EditableState edited = good;
    cases[c].first(edited);
    edited.write(path);
    Session t(m);
    try {
      t.load(path);
      ADD_FAILURE() << "case " << c << ": accepted an edited state";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cases[c].second), std::string::npos)
          << "case " << c << ": " << e.what();
    }
    EXPECT_EQ(t.position(), 0) << "a refused load leaves the session as it was";
  }
  // The unedited file, rewritten the same way, still loads: the refusals above are the edits'.
  good.write(path);
  Session t(m);
  t.load(path);
  EXPECT_EQ(t.position(), 13);
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
