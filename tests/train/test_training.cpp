#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "infer/streaming_eval.hpp"
#include "train/trainer.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

Config mqar_config(const std::string& layers, int d_model, int steps, double lr, int batch) {
  Config c;
  c.model.vocab_size = 8192;
  c.model.d_model = d_model;
  c.model.n_heads = 2;
  c.model.layers = layers;
  c.model.d_ff = 0;
  c.train.steps = steps;
  c.train.batch_size = batch;
  c.train.lr = lr;
  c.train.warmup_steps = 50;
  c.train.eval_every = 0;
  c.train.eval_batches = 16;
  c.data.seq_len = 64;
  c.data.num_kv_pairs = 4;
  return c;
}

// The learning tests evaluate every 250 steps and stop at the first evaluation that reaches the accuracy
// they assert (train.stop_accuracy), so a model that learns early does not spend the rest of the budget;
// the final evaluation is that one (same evaluation batches), and a model that never gets there runs all
// the steps and fails. On a Zen 3 core pair: attention stops at step 1500, B'MOJO at 1250 of 2500.
Config learning_test_config(const std::string& layers, int steps, double accuracy) {
  Config c = mqar_config(layers, 64, steps, 3e-3, 64);
  c.train.eval_every = 250;
  c.train.stop_accuracy = accuracy;
  return c;
}

TEST(Training, AttentionLearnsMqar) {
  Trainer trainer(learning_test_config("AA", 2500, 0.99), TrainOptions{});
  const TrainSummary s = trainer.run();
  EXPECT_GE(s.eval.accuracy, 0.99) << "2-layer attention on MQAR L=64 K=4";
  EXPECT_EQ(s.eval.labelled, 16 * 64 * 4);
}

// The built-in demo's model: 2-layer B'MOJO, window 16, eidetic memory k = 2, m = 8.
TEST(Training, BmojoLearnsMqar) {
  Config c = learning_test_config("BB", 2500, 0.9);
  c.model.window = 16;
  c.model.eidetic_per_chunk = 2;
  c.model.eidetic_capacity = 8;
  Trainer trainer(c, TrainOptions{});
  const TrainSummary s = trainer.run();
  EXPECT_GE(s.eval.accuracy, 0.9) << "2-layer B'MOJO on MQAR L=64 K=4";
  // The trained model answers the same through streaming inference, one session per sequence.
  StreamingEvalOptions so;
  so.batches = 2;
  so.block = 5;
  const EvalResult parallel = evaluate_model(trainer.model(), c, 2);
  const EvalResult streamed = evaluate_streaming(trainer.model(), c, so);
  EXPECT_EQ(streamed.labelled, parallel.labelled);
  EXPECT_NEAR(streamed.accuracy, parallel.accuracy, 1.0 / parallel.labelled + 1e-9);
  EXPECT_NEAR(streamed.loss, parallel.loss, 1e-3 * std::max(1.0, parallel.loss));
}

// Within this budget a 2-layer Mamba learns to answer with a value from its context (accuracy about 0.26:
// one of the K = 4 values, against a chance level of 1/4096) but not yet which key it belongs to; longer
// runs are in the MQAR experiment suite (docs/mqar.md).
TEST(Training, MambaLearnsMqarWellAboveChance) {
  Trainer trainer(learning_test_config("MM", 1500, 0.2), TrainOptions{});
  const TrainSummary s = trainer.run();
  EXPECT_GE(s.eval.accuracy, 0.2) << "chance is 1/4096";
}

Config tiny_config() {
  Config c;
  c.model.vocab_size = 128;
  c.model.d_model = 32;
  c.model.n_heads = 2;
  c.model.layers = "AM";
  c.model.d_ff = 32;
  c.train.steps = 24;
  c.train.batch_size = 8;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 5;
  c.train.eval_every = 5;
  c.train.log_every = 4;
  c.data.seq_len = 32;
  c.data.num_kv_pairs = 4;
  return c;
}

// Building a trainer from (c, o) fails with an error that says needle.
void expect_refused(const Config& c, const TrainOptions& o, const std::string& needle) {
  try {
    Trainer t(c, o);
    ADD_FAILURE() << "accepted; expected an error saying: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Training, SameSeedSameLossCurve) {
  Trainer a(tiny_config(), TrainOptions{}), b(tiny_config(), TrainOptions{});
  a.run();
  b.run();
  EXPECT_EQ(a.step_losses(), b.step_losses());
}

TEST(Training, ResumeContinuesExactly) {
  const fs::path dir = fs::temp_directory_path() / ("bmojo_resume_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const Config c = tiny_config();
  Trainer straight(c, TrainOptions{});
  straight.run();

  TrainOptions first;
  first.out_dir = dir.string();
  first.stop_after = 11;  // not a multiple of the log or eval period
  Trainer part1(c, first);
  part1.run();
  TrainOptions second;
  second.out_dir = dir.string();
  second.resume_from = (dir / "checkpoint.safetensors").string();
  Trainer part2(c, second);
  part2.run();

  std::vector<double> joined = part1.step_losses();
  joined.insert(joined.end(), part2.step_losses().begin(), part2.step_losses().end());
  ASSERT_EQ(joined.size(), straight.step_losses().size());
  for (size_t i = 0; i < joined.size(); ++i)
    EXPECT_EQ(joined[i], straight.step_losses()[i]) << "step " << i + 1;
  EXPECT_TRUE(fs::exists(dir / "log.jsonl"));
  fs::remove_all(dir);
}

// init_from: a new run from another run's weights. Before any step it evaluates exactly as the run it
// came from (same weights, same held-out batches); it then takes all of its own steps from step 0, with its
// own optimizer, so its first loss is not a fresh model's. Resuming and starting from weights together, or
// weights of another shape, are refused.
TEST(Training, InitStartsANewRunFromAnotherRunsWeights) {
  const fs::path dir = fs::temp_directory_path() / ("bmojo_init_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const Config c = tiny_config();
  TrainOptions save;
  save.out_dir = dir.string();
  Trainer trained(c, save);
  trained.run();
  const EvalResult want = trained.evaluate();

  TrainOptions from;
  from.init_from = (dir / "checkpoint.safetensors").string();
  Trainer tuned(c, from);
  const EvalResult got = tuned.evaluate();
  EXPECT_EQ(got.loss, want.loss);
  EXPECT_EQ(got.accuracy, want.accuracy);
  tuned.run();
  Trainer fresh(c, TrainOptions{});
  fresh.run();
  ASSERT_EQ(tuned.step_losses().size(), static_cast<size_t>(c.train.steps));
  EXPECT_NE(tuned.step_losses()[0], fresh.step_losses()[0]);

  TrainOptions both = from;
  both.resume_from = from.init_from;
  expect_refused(c, both, "not both");
  Config wider = c;
  wider.model.d_model = 64;
  expect_refused(wider, from, "but the config expects");
  fs::remove_all(dir);
}

// train.stop_accuracy: the run ends at the first evaluation that reaches it, after exactly the steps (and
// losses) of the run without it up to there; a threshold never reached changes nothing.
TEST(Training, StopsAtTheFirstEvaluationThatReachesTheAccuracy) {
  const fs::path dir = fs::temp_directory_path() / ("bmojo_stop_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  Config c = tiny_config();
  c.train.steps = 40;
  TrainOptions logged;
  logged.out_dir = dir.string();
  Trainer straight(c, logged);
  const TrainSummary all = straight.run();
  // The intermediate evaluations of the full run (steps 5, 10, ..., 35): the best, and where it first occurs.
  double best = 0.0;
  int64_t first_best = 0;
  std::ifstream log(dir / "log.jsonl");
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("eval_accuracy") || j.contains("final")) continue;
    if (j["eval_accuracy"].get<double>() > best) {
      best = j["eval_accuracy"].get<double>();
      first_best = j["step"].get<int64_t>();
    }
  }
  fs::remove_all(dir);
  ASSERT_GT(best, 0.0) << "no intermediate evaluation scored: the test needs one that does";
  ASSERT_LT(first_best, c.train.steps);

  Config stopping = c;
  stopping.train.stop_accuracy = best;
  Trainer early(stopping, TrainOptions{});
  const TrainSummary s = early.run();
  EXPECT_EQ(s.steps, first_best);
  ASSERT_EQ(early.step_losses().size(), static_cast<size_t>(first_best));
  for (int64_t i = 0; i < first_best; ++i) EXPECT_EQ(early.step_losses()[i], straight.step_losses()[i]);
  EXPECT_DOUBLE_EQ(s.eval.accuracy, best);  // the final evaluation is that of the step it stopped at

  Config never = c;
  never.train.stop_accuracy = 1.0;
  if (all.eval.accuracy < 1.0) {
    Trainer full(never, TrainOptions{});
    EXPECT_EQ(full.run().steps, c.train.steps);
    EXPECT_EQ(full.step_losses(), straight.step_losses());
  }
}

// train.grad_accum: micro-batches of b rows give the losses of one batch of their combined rows.
TEST(Training, MicroBatchesGiveTheLossesOfTheFullBatch) {
  Config whole = tiny_config();
  whole.train.batch_size = 8;
  Config micro = whole;
  micro.train.batch_size = 2;
  micro.train.grad_accum = 4;
  Trainer a(whole, TrainOptions{}), b(micro, TrainOptions{});
  const TrainSummary sa = a.run(), sb = b.run();
  ASSERT_EQ(a.step_losses().size(), b.step_losses().size());
  for (size_t i = 0; i < a.step_losses().size(); ++i)
    EXPECT_NEAR(b.step_losses()[i], a.step_losses()[i], 1e-5 * std::fabs(a.step_losses()[i]))
        << "step " << i + 1;
  EXPECT_NEAR(sb.eval.loss, sa.eval.loss, 1e-5 * sa.eval.loss);
  // A resumed run must keep the global batch (the data position counts batches of it).
  const fs::path dir = fs::temp_directory_path() / ("bmojo_accum_" + std::to_string(::getpid()));
  TrainOptions save;
  save.out_dir = dir.string();
  save.stop_after = 2;
  Trainer(micro, save).run();
  TrainOptions resume;
  resume.resume_from = (dir / "checkpoint.safetensors").string();
  Config other = micro;
  other.train.grad_accum = 2;
  expect_refused(other, resume, "global batch of 8 rows a step, this run's is 4");
  Trainer ok(whole, resume);  // 1 x 8 continues 4 x 2
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bmojo
