// The training loop: batches, forward, backward, clipping, AdamW, schedule, evaluation, progress output,
// a JSONL log and checkpoints; resumable to the bit.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "data/batches.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "train/adamw.hpp"
#include "train/checkpoint.hpp"
#include "train/data_parallel.hpp"

namespace bmojo {

struct TrainOptions {
  std::string out_dir;      // checkpoint.safetensors and log.jsonl go here; empty = write nothing
  std::string resume_from;  // checkpoint to continue from; empty = fresh start
  // Checkpoint whose weights a fresh run starts from (fine-tuning, curricula): its optimizer state, step
  // and data position are not used, this run's config gives everything else. Excludes resume_from.
  std::string init_from;
  int64_t stop_after = -1;  // stop after this many total steps (the schedule still spans train.steps)
  std::ostream* progress = nullptr;  // human-readable progress; null = silent
  // Data parallel (train/data_parallel.hpp): this rank takes rows [rank b, (rank + 1) b) of each global batch
  // of size b x size (b = train.batch_size) and gradients are averaged over the ranks. Give out_dir and
  // progress to rank 0 only.
  World world;
};

struct EvalResult {
  double loss = 0.0;      // mean cross-entropy (nats) over labelled positions
  double accuracy = 0.0;  // top-1 accuracy over labelled positions
  int64_t labelled = 0;
  // Text task: bytes of text the labelled targets decode to, and the loss in bits per byte
  // (total nats / ln 2 / bytes), comparable across tokenizers.
  int64_t bytes = 0;
  double bits_per_byte = 0.0;
  double perplexity() const;
};

struct TrainSummary {
  int64_t steps = 0;
  double train_loss = 0.0;  // last step's loss
  EvalResult eval;          // final evaluation
  double tokens_per_second = 0.0;
  double ms_per_step = 0.0;
  double gflops = 0.0;                 // achieved model GFLOP/s
  double allreduce_ms_per_step = 0.0;  // data parallel: time in the gradient all-reduce
  size_t num_params = 0;
};

class Trainer {
 public:
  Trainer(const Config& config, TrainOptions options);
  TrainSummary run();
  EvalResult evaluate();
  Model& model() { return *model_; }
  // Training loss of every step taken in this run, in order.
  const std::vector<double>& step_losses() const { return step_losses_; }

 private:
  void save(const std::string& path);
  void log_line(const std::string& json_line);
  [[noreturn]] void diverged(const LossResult& r, double grad_norm, const std::string& ckpt) const;

  Config config_;
  TrainOptions options_;
  Config data_config_;  // config_ with the global batch (batch_size x ranks): what data_ reads
  std::unique_ptr<BatchSource> data_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<AdamW> optimizer_;
  TrainingState state_;
  std::vector<double> step_losses_;
  std::vector<float> accumulated_;  // the micro-batches' gradient sum (train.grad_accum > 1)
};

// Evaluates a model on `batches` held-out batches of the config's task. In a distributed world every rank
// calls it, evaluates its share of the batches and gets the result over all of them.
EvalResult evaluate_model(Model& model, const Config& config, int batches);
EvalResult evaluate_model(Model& model, const BatchSource& data, int batches, const World& world = World{});

}  // namespace bmojo
