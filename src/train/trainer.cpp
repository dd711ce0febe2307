#include "train/trainer.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "data/mqar.hpp"
#include "model/flops.hpp"
#include "model/memory_estimate.hpp"
#include "train/train_step.hpp"

namespace bmojo {

namespace {

std::string format(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a);
  return buf;
}

}  // namespace

double EvalResult::perplexity() const {
  return std::exp(loss);
}

EvalResult evaluate_model(Model& model, const Config& config, int batches) {
  const BatchSource data(config);
  return evaluate_model(model, data, batches);
}

EvalResult evaluate_model(Model& model, const BatchSource& data, int batches, const World& world) {
  EvalResult r;
  double loss_sum = 0.0;
  int64_t correct = 0;
  // Distributed: rank r takes batches r, r + size, ...; the sums are added over the ranks.
  for (int i = world.rank; i < batches; i += world.size) {
    const Batch b = data.eval(static_cast<uint64_t>(i));
    const LossResult l = model.forward(b.inputs.data(), b.targets.data(), b.B, b.T);
    loss_sum += l.loss * l.labelled;
    correct += l.correct;
    r.labelled += l.labelled;
    if (data.text())
      for (int32_t t : b.targets)
        if (t != kIgnoreLabel) r.bytes += data.eval_token_bytes(t);
  }
  if (world.distributed()) {
    const auto sum = [&](double v) { return allreduce_mean(v) * world.size; };
    loss_sum = sum(loss_sum);
    correct = std::llround(sum(static_cast<double>(correct)));
    r.labelled = std::llround(sum(static_cast<double>(r.labelled)));
    r.bytes = std::llround(sum(static_cast<double>(r.bytes)));
  }
  if (r.labelled > 0) {
    r.loss = loss_sum / r.labelled;
    r.accuracy = static_cast<double>(correct) / r.labelled;
  }
  if (r.bytes > 0) r.bits_per_byte = loss_sum / std::log(2.0) / static_cast<double>(r.bytes);
  return r;
}

Trainer::Trainer(const Config& config, TrainOptions options) : config_(config), options_(std::move(options)) {
  config_.validate();
  check_fits_in_memory(estimate_training_memory(config_).total(),
                       "training at batch " + std::to_string(config_.train.batch_size) + " x " +
                           std::to_string(config_.data.total_length()) + " tokens");
  const World& world = options_.world;
  data_config_ = config_;
  const int64_t global_batch =
      static_cast<int64_t>(config_.train.batch_size) * config_.train.grad_accum * world.size;
  check(global_batch <= (1 << 24), "the global batch (ranks x train.grad_accum x train.batch_size = " +
                                       std::to_string(global_batch) + ") is beyond 2^24 rows");
  data_config_.train.batch_size = static_cast<int>(global_batch);
  data_ = std::make_unique<BatchSource>(data_config_);
  if (world.distributed()) {
    // Every rank must train the same thing: the same config (model, data, schedule) and binary.
    const std::string cfg = config_to_json(config_).dump();
    check_same_on_every_rank(fnv1a64(cfg.data(), cfg.size()), "config");
    const std::string version = std::string(BMOJO_VERSION) + " " + __DATE__ + " " + __TIME__;
    check_same_on_every_rank(fnv1a64(version.data(), version.size()), "bmojo binary (version and build)");
    check_same_on_every_rank(data_->tokenizer_hash(), "tokenizer");
    check_same_on_every_rank(data_->data_hash(), "token files (data.train_tokens, data.valid_tokens)");
  }
  model_ = std::make_unique<Model>(config_.model);
  optimizer_ = std::make_unique<AdamW>(model_->layout().slab_size());
  check(options_.resume_from.empty() || options_.init_from.empty(),
        "give a checkpoint to resume from or one whose weights to start from, not both");
  if (options_.resume_from.empty()) {
    model_->init_weights(config_.train.seed);
    state_.rng = Rng(mix_seed(config_.train.seed, 7)).state();
    if (!options_.init_from.empty()) {
      // Only the weights (every tensor's shape must be this config's); the optimizer starts fresh at step 0.
      const CheckpointInfo info = load_checkpoint(options_.init_from, *model_, nullptr);
      check(info.state.tokenizer_hash == 0 || info.state.tokenizer_hash == data_->tokenizer_hash(),
            "cannot start from " + options_.init_from + ": it was trained on text of another tokenizer");
      if (world.distributed())
        check_same_on_every_rank(fnv1a64(model_->params(), model_->layout().slab_size() * sizeof(float)),
                                 "weights loaded from " + options_.init_from);
    }
  } else {
    const CheckpointInfo info = load_checkpoint(options_.resume_from, *model_, optimizer_.get());
    state_ = info.state;
    check(state_.tokenizer_hash == data_->tokenizer_hash(),
          "cannot resume from " + options_.resume_from + ": it was trained on text of another tokenizer");
    // Any number of ranks may continue a run, as long as a step still covers the same rows (the data
    // position counts global batches).
    check(state_.global_batch == 0 || state_.global_batch == global_batch,
          "cannot resume from " + options_.resume_from + ": it was trained with a global batch of " +
              std::to_string(state_.global_batch) + " rows a step, this run's is " +
              std::to_string(global_batch) + " (" + std::to_string(world.size) +
              " ranks x train.grad_accum " + std::to_string(config_.train.grad_accum) +
              " x train.batch_size " + std::to_string(config_.train.batch_size) +
              "): choose them so that the product is " + std::to_string(state_.global_batch));
  }
  state_.tokenizer_hash = data_->tokenizer_hash();
  state_.global_batch = global_batch;
}

EvalResult Trainer::evaluate() {
  return evaluate_model(*model_, *data_, config_.train.eval_batches, options_.world);
}

void Trainer::log_line(const std::string& line) {
  if (options_.out_dir.empty()) return;
  append_to_file((std::filesystem::path(options_.out_dir) / "log.jsonl").string(), line + "\n",
                 "training log");
}

void Trainer::save(const std::string& path) {
  save_checkpoint(path, config_, *model_, optimizer_.get(), state_);
}

namespace {

// The first tensor of the layout holding a NaN or an infinity in slab, or "" when all are finite.
std::string first_non_finite(const float* slab, const ParameterLayout& layout) {
  for (const TensorSpec& t : layout.tensors())
    for (size_t i = 0; i < t.numel; ++i)
      if (!std::isfinite(slab[t.offset + i])) return t.name;
  return "";
}

}  // namespace

// Stops the run: nothing is saved, so the last good checkpoint stays as it was.
void Trainer::diverged(const LossResult& r, double grad_norm, const std::string& ckpt) const {
  std::string where;
  const std::string grad = first_non_finite(model_->grads(), model_->layout());
  const std::string weight = first_non_finite(static_cast<const Model&>(*model_).params(), model_->layout());
  if (!weight.empty())
    where = "first non-finite weight in tensor '" + weight + "'";
  else if (!grad.empty())
    where = "first non-finite gradient in tensor '" + grad + "'";
  else
    where = "the gradient norm overflowed";
  fail("training diverged at step " + std::to_string(state_.step + 1) + ": loss " + format("%g", r.loss) +
       ", innovation loss " + format("%g", r.innovation_loss) + ", gradient norm " + format("%g", grad_norm) +
       "; " + where +
       (ckpt.empty() ? std::string() : "; the last checkpoint '" + ckpt + "' is kept as it was") +
       " (try a lower train.lr or train.grad_clip)");
}

namespace {

// Sets the matrix-product precision for the duration of a run.
struct MatmulPrecision {
  explicit MatmulPrecision(bool bf16) : previous(matmul_bf16()) { set_matmul_bf16(bf16); }
  ~MatmulPrecision() { set_matmul_bf16(previous); }
  bool previous;
};

}  // namespace

TrainSummary Trainer::run() {
  const TrainConfig& tc = config_.train;
  const MatmulPrecision precision(tc.bf16_matmul);
  const int64_t last = options_.stop_after >= 0 ? std::min<int64_t>(options_.stop_after, tc.steps) : tc.steps;
  std::ostream* out = options_.progress;
  if (!options_.out_dir.empty()) {
    std::filesystem::create_directories(options_.out_dir);
    // The tokenizer travels with the model: generation and evaluation load it from next to the checkpoint.
    if (data_->text() && config_.data.tokenizer != "byte")
      write_file_atomic((std::filesystem::path(options_.out_dir) / "tokenizer.model").string(),
                        read_file(config_.data.tokenizer));
  }
  const std::string ckpt =
      options_.out_dir.empty()
          ? ""
          : (std::filesystem::path(options_.out_dir) / "checkpoint.safetensors").string();
  TrainSummary summary;
  summary.num_params = model_->num_params();
  const int T = config_.data.total_length();
  const double tokens_per_step = static_cast<double>(state_.global_batch) * T;
  const bool has_innovation = model_->config().layers.find('B') != std::string::npos;
  double timed_ms = 0.0;
  int64_t timed_steps = 0;
  double window_ms = 0.0;
  int window_steps = 0;
  // Share of positions that reach the LM head, for the FLOP count.
  double head_fraction = 1.0;
  if (config_.data.task == "mqar") head_fraction = static_cast<double>(config_.data.num_kv_pairs) / T;
  const double flops_per_token = training_flops_per_token(config_.model, T, head_fraction);

  if (out && state_.step > 0) *out << "resuming at step " << state_.step << "\n";
  const World& world = options_.world;
  const GradientHook reduce =
      world.distributed() ? GradientHook([](float* g, size_t n) { allreduce_mean(g, n); }) : GradientHook();
  while (state_.step < last) {
    const auto t0 = std::chrono::steady_clock::now();
    const Batch global = data_->train(state_.data_position);
    // This rank's rows of the global batch (all of it in a single process), as grad_accum micro-batches.
    const int B = tc.batch_size;
    const size_t row0 = static_cast<size_t>(world.rank) * tc.grad_accum * B * global.T;
    const float lr = learning_rate(tc, state_.step);
    StepResult step =
        train_step(*model_, *optimizer_, global.inputs.data() + row0, global.targets.data() + row0, B,
                   global.T, lr, tc, reduce, tc.grad_accum, &accumulated_);
    if (world.distributed()) {
      // The ranks' losses averaged (equal rows per rank): the loss of the global batch.
      step.loss.loss = allreduce_mean(step.loss.loss);
      step.loss.innovation_loss = allreduce_mean(step.loss.innovation_loss);
      const double correct = allreduce_mean(static_cast<double>(step.loss.correct)) * world.size;
      const double labelled = allreduce_mean(static_cast<double>(step.loss.labelled)) * world.size;
      step.loss.correct = static_cast<int64_t>(std::llround(correct));
      step.loss.labelled = static_cast<int64_t>(std::llround(labelled));
    }
    if (!step.finite) diverged(step.loss, step.grad_norm, ckpt);
    const LossResult& r = step.loss;
    const double norm = step.grad_norm;
    ++state_.step;
    ++state_.data_position;
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    step_losses_.push_back(r.loss);
    summary.train_loss = r.loss;
    if (state_.step > 1 || last == 1) {  // the first step pays for allocation
      timed_ms += ms;
      ++timed_steps;
    }
    window_ms += ms;
    ++window_steps;

    if (state_.step % tc.log_every == 0 || state_.step == last) {
      // The weights must be identical on every rank (same reduced gradients, same step): a cheap proof.
      if (world.distributed())
        check_same_on_every_rank(model_->fingerprint(),
                                 "weights at step " + std::to_string(state_.step) + " (the ranks diverged)");
      const double avg = window_ms / window_steps;
      const double tps = tokens_per_step / (avg / 1000.0);
      nlohmann::json j = {{"step", state_.step}, {"loss", r.loss},     {"accuracy", r.accuracy()}, {"lr", lr},
                          {"grad_norm", norm},   {"ms_per_step", avg}, {"tokens_per_s", tps}};
      if (has_innovation) j["innovation_loss"] = r.innovation_loss;
      log_line(j.dump());
      if (out)
        *out << "step " << state_.step << "/" << tc.steps << " | loss " << format("%.4f", r.loss) << " | acc "
             << format("%.3f", r.accuracy())
             << (has_innovation ? " | innov " + format("%.4f", r.innovation_loss) : std::string()) << " | lr "
             << format("%.2e", lr) << " | " << format("%.1f", avg) << " ms/step | " << format("%.0f", tps)
             << " tok/s" << std::endl;
      window_ms = 0.0;
      window_steps = 0;
    }
    const bool eval_now = tc.eval_every > 0 && state_.step % tc.eval_every == 0 && state_.step != last;
    if (eval_now) {
      const EvalResult e = evaluate();
      nlohmann::json j{{"step", state_.step}, {"eval_loss", e.loss}, {"eval_accuracy", e.accuracy}};
      if (data_->text()) j["eval_bits_per_byte"] = e.bits_per_byte;
      log_line(j.dump());
      if (out)
        *out << "eval step " << state_.step << " | loss " << format("%.4f", e.loss) << " | acc "
             << format("%.3f", e.accuracy)
             << (data_->text() ? " | ppl " + format("%.2f", e.perplexity()) + " | bpb " +
                                     format("%.4f", e.bits_per_byte)
                               : std::string())
             << std::endl;
      // Early stop: the evaluation is the same on every rank (reduced), so every rank leaves together.
      if (tc.stop_accuracy > 0.0 && e.accuracy >= tc.stop_accuracy) {
        log_line(
            nlohmann::json{{"step", state_.step}, {"stopped", "eval accuracy reached train.stop_accuracy"}}
                .dump());
        if (out)
          *out << "stopping at step " << state_.step << " of " << tc.steps << ": eval accuracy "
               << format("%.3f", e.accuracy) << " >= train.stop_accuracy " << format("%.3f", tc.stop_accuracy)
               << std::endl;
        break;
      }
    }
    if (!ckpt.empty() && tc.checkpoint_every > 0 && state_.step % tc.checkpoint_every == 0) save(ckpt);
  }
  summary.steps = state_.step;
  summary.eval = evaluate();
  nlohmann::json fj{{"step", state_.step},
                    {"eval_loss", summary.eval.loss},
                    {"eval_accuracy", summary.eval.accuracy},
                    {"final", true}};
  if (data_->text()) fj["eval_bits_per_byte"] = summary.eval.bits_per_byte;
  log_line(fj.dump());
  if (out) {
    *out << "final eval at step " << state_.step << " | loss " << format("%.4f", summary.eval.loss);
    if (data_->text())
      *out << " | perplexity " << format("%.3f", summary.eval.perplexity()) << " | bits/byte "
           << format("%.4f", summary.eval.bits_per_byte) << " | next-token accuracy "
           << format("%.4f", summary.eval.accuracy) << " (" << summary.eval.labelled << " tokens)"
           << std::endl;
    else
      *out << " | accuracy " << format("%.4f", summary.eval.accuracy) << " (" << summary.eval.labelled
           << " queries)" << std::endl;
  }
  if (timed_steps > 0) {
    summary.ms_per_step = timed_ms / timed_steps;
    summary.tokens_per_second = tokens_per_step / (summary.ms_per_step / 1000.0);
    summary.gflops = flops_per_token * summary.tokens_per_second / 1e9;
  }
  const int64_t steps_run = static_cast<int64_t>(step_losses_.size());
  if (steps_run > 0) summary.allreduce_ms_per_step = allreduce_seconds() * 1000.0 / steps_run;
  if (!ckpt.empty()) {
    save(ckpt);
    if (out) *out << "checkpoint written to " << ckpt << std::endl;
  }
  return summary;
}

}  // namespace bmojo
