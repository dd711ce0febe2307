// `bmojo train`: train a model (the built-in MQAR demo by default), with checkpoints and exact resume, or
// from another run's weights (--init).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "model/config.hpp"
#include "train/trainer.hpp"

namespace bmojo {

namespace {

using nlohmann::json;

int run_train(const CommonOptions& o, const std::string& out_dir, const std::string& resume,
              const std::string& init, std::optional<int> steps, std::optional<double> lr,
              std::optional<uint64_t> seed, int64_t stop_after, int collective_timeout) {
  set_collective_timeout(collective_timeout);
  const World world = init_world();
  // Threads per rank: the cores shared among the ranks on this node, unless --threads says otherwise.
  int local_ranks = 1;
  if (const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) local_ranks = std::max(1, std::atoi(v));
  if (o.threads > 0)
    set_num_threads(o.threads);
  else
    set_num_threads(std::max(1, num_cores() / local_ranks));
  Config c = o.config_path.empty() ? default_config() : load_config_file(o.config_path);
  if (steps) c.train.steps = *steps;
  if (lr) c.train.lr = *lr;
  if (seed) c.train.seed = *seed;
  for (const auto& a : o.overrides) apply_override(c, a);
  c.validate();
  // Rank 0 alone prints, logs and writes checkpoints.
  std::ostringstream silent;
  std::ostream& progress = world.rank != 0 ? silent : o.json ? std::cerr : std::cout;
  TrainOptions opts;
  opts.out_dir = world.rank == 0 ? out_dir : "";
  opts.resume_from = resume;
  opts.init_from = init;
  opts.stop_after = stop_after;
  opts.progress = world.rank == 0 ? &progress : nullptr;
  opts.world = world;
  Trainer trainer(c, opts);
  if (world.distributed())
    progress << "bmojo train | data parallel: " << world.size << " ranks x batch " << c.train.batch_size
             << (c.train.grad_accum > 1 ? " x " + std::to_string(c.train.grad_accum) + " micro-batches" : "")
             << " = global batch " << world.size * c.train.batch_size * c.train.grad_accum
             << " | threads per rank " << num_threads() << std::endl;
  progress << "bmojo train | layers " << c.model.layers << " | d_model " << c.model.d_model << " | params "
           << trainer.model().num_params() << " | task " << c.data.task << " L=" << c.data.seq_len
           << (c.data.task == "mqar" ? " K=" + std::to_string(c.data.num_kv_pairs) : "")
           << (c.data.gap ? " gap=" + std::to_string(c.data.gap) : "") << " | batch " << c.train.batch_size
           << (c.train.grad_accum > 1 ? " x " + std::to_string(c.train.grad_accum) + " micro-batches" : "")
           << " | threads " << num_threads() << " | BLAS " << blas_core_name() << std::endl;
  if (!init.empty()) progress << "bmojo train | starting from the weights of " << init << std::endl;
  const TrainSummary s = trainer.run();
  finalize_world();
  if (world.rank != 0) return 0;
  if (o.json) {
    std::cout << json{{"steps", s.steps},
                      {"loss", s.eval.loss},
                      {"accuracy", s.eval.accuracy},
                      {"train_loss", s.train_loss},
                      {"tokens_per_s", s.tokens_per_second},
                      {"ms_per_step", s.ms_per_step},
                      {"gflops", s.gflops},
                      {"ranks", world.size},
                      {"allreduce_ms_per_step", s.allreduce_ms_per_step},
                      {"params", s.num_params}}
                     .dump()
              << std::endl;
  } else {
    std::printf("accuracy %.4f | loss %.4f | %.0f tokens/s | %zu params", s.eval.accuracy, s.eval.loss,
                s.tokens_per_second, s.num_params);
    if (world.distributed())
      std::printf(" | %d ranks, all-reduce %.2f ms/step", world.size, s.allreduce_ms_per_step);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

Command train_command(CLI::App& app) {
  struct State {
    CommonOptions train_o;
    std::string out_dir, resume, init;
    std::optional<int> steps;
    std::optional<double> lr;
    std::optional<uint64_t> seed;
    int64_t stop_after = -1;
    int collective_timeout = 300;
  };
  auto s = std::make_shared<State>();
  auto* train = app.add_subcommand("train", "Train a model (default: the built-in MQAR demo)");
  add_common(train, s->train_o, true);
  train->add_option("-o,--out", s->out_dir, "Directory for checkpoint.safetensors and log.jsonl");
  train
      ->add_option("--resume", s->resume,
                   "Continue from this checkpoint (optimizer, step and data position restored)")
      ->check(CLI::ExistingFile);
  train
      ->add_option(
          "--init", s->init,
          "Start from this checkpoint's weights: a new run (fresh optimizer, step 0, this run's config "
          "and data; the tensor shapes must match), e.g. to fine-tune or to continue a curriculum")
      ->check(CLI::ExistingFile)
      ->excludes("--resume");
  add_integer(train, "--steps", s->steps, "Total training steps (train.steps)", 0,
              std::numeric_limits<int>::max());
  train->add_option("--lr", s->lr, "Peak learning rate (train.lr)")->check(CLI::PositiveNumber);
  add_integer(train, "--seed", s->seed, "Seed for weights and data (train.seed)", uint64_t{0},
              std::numeric_limits<uint64_t>::max());
  add_integer(train, "--stop-after", s->stop_after,
              "Stop once this many steps are done, keeping the schedule of train.steps (for staged runs)",
              int64_t{0}, std::numeric_limits<int64_t>::max());
  add_integer(train, "--collective-timeout", s->collective_timeout,
              "Under mpirun: seconds a rank waits for the others in one all-reduce before it ends the job "
              "(a hung or lost rank; default 300, 0 = wait forever)",
              0, 86400);
  return {train, [s] {
            return run_train(s->train_o, s->out_dir, s->resume, s->init, s->steps, s->lr, s->seed,
                             s->stop_after, s->collective_timeout);
          }};
}

}  // namespace bmojo
