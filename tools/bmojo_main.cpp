// bmojo: train, evaluate, inspect and benchmark B'MOJO-family models.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli_numbers.hpp"
#include "core/blas.hpp"
#include "core/cpu_features.hpp"
#include "core/error.hpp"
#include "core/machine_peak.hpp"
#include "core/profile.hpp"
#include "core/runtime.hpp"
#include "data/batches.hpp"
#include "data/mqar.hpp"
#include "data_cmd.hpp"
#include "generate.hpp"
#include "infer/session.hpp"
#include "infer/streaming_eval.hpp"
#include "infer_bench.hpp"
#include "lengthgen.hpp"
#include "model/config.hpp"
#include "model/flops.hpp"
#include "model/memory_estimate.hpp"
#include "model/model.hpp"
#include "parity_dump.hpp"
#include "train/adamw.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"

namespace {

using namespace bmojo;
using nlohmann::json;

constexpr int kMaxThreads = 4096;
constexpr int64_t kMaxPrefillBlock = 1 << 16;

// The built-in default: MQAR at L=64, K=4 (SPEC section 8), a 2-layer B'MOJO model without MLP: window
// W = 16, so most keys are recalled through the fading and eidetic memories rather than in context.
Config default_config() {
  Config c;
  c.model.vocab_size = 8192;
  c.model.d_model = 64;
  c.model.n_heads = 2;
  c.model.layers = "BB";
  c.model.window = 16;
  c.model.eidetic_per_chunk = 2;
  c.model.eidetic_capacity = 8;
  c.model.d_ff = 0;
  c.train.steps = 2500;
  c.train.batch_size = 64;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 100;
  c.train.eval_every = 250;
  c.train.eval_batches = 8;
  c.train.log_every = 50;
  c.data.seq_len = 64;
  c.data.num_kv_pairs = 4;
  return c;
}

struct CommonOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  int threads = 0;
  bool json = false;
};

void add_common(CLI::App* cmd, CommonOptions& o, bool with_config) {
  if (with_config) {
    cmd->add_option("-c,--config", o.config_path, "JSON config file (default: the built-in MQAR demo config)")
        ->check(CLI::ExistingFile);
    cmd->add_option("-s,--set", o.overrides,
                    "Override a config value, e.g. --set model.d_model=128 (repeatable)");
  }
  add_integer(cmd, "--threads", o.threads, "Threads for kernels and BLAS (default: all cores)", 1,
              kMaxThreads);
  cmd->add_flag("--json", o.json,
                "Print the final summary as one JSON line on stdout (progress goes to stderr)");
}

Config build_config(const CommonOptions& o) {
  Config c = o.config_path.empty() ? default_config() : load_config_file(o.config_path);
  for (const auto& a : o.overrides) apply_override(c, a);
  c.validate();
  return c;
}

void apply_threads(int threads) {
  set_num_threads(threads > 0 ? threads : num_cores());
}

int run_train(const CommonOptions& o, const std::string& out_dir, const std::string& resume,
              std::optional<int> steps, std::optional<double> lr, std::optional<uint64_t> seed,
              int64_t stop_after) {
  apply_threads(o.threads);
  Config c = o.config_path.empty() ? default_config() : load_config_file(o.config_path);
  if (steps) c.train.steps = *steps;
  if (lr) c.train.lr = *lr;
  if (seed) c.train.seed = *seed;
  for (const auto& a : o.overrides) apply_override(c, a);
  c.validate();
  std::ostream& progress = o.json ? std::cerr : std::cout;
  TrainOptions opts;
  opts.out_dir = out_dir;
  opts.resume_from = resume;
  opts.stop_after = stop_after;
  opts.progress = &progress;
  Trainer trainer(c, opts);
  progress << "bmojo train | layers " << c.model.layers << " | d_model " << c.model.d_model << " | params "
           << trainer.model().num_params() << " | task " << c.data.task << " L=" << c.data.seq_len
           << (c.data.task == "mqar" ? " K=" + std::to_string(c.data.num_kv_pairs) : "")
           << (c.data.gap ? " gap=" + std::to_string(c.data.gap) : "") << " | batch " << c.train.batch_size
           << " | threads " << num_threads() << " | BLAS " << blas_core_name() << std::endl;
  const TrainSummary s = trainer.run();
  if (o.json) {
    std::cout << json{{"steps", s.steps},
                      {"loss", s.eval.loss},
                      {"accuracy", s.eval.accuracy},
                      {"train_loss", s.train_loss},
                      {"tokens_per_s", s.tokens_per_second},
                      {"ms_per_step", s.ms_per_step},
                      {"gflops", s.gflops},
                      {"params", s.num_params}}
                     .dump()
              << std::endl;
  } else {
    std::printf("accuracy %.4f | loss %.4f | %.0f tokens/s | %zu params\n", s.eval.accuracy, s.eval.loss,
                s.tokens_per_second, s.num_params);
  }
  return 0;
}

struct EvalOptions {
  std::string checkpoint;
  int batches = 0;
  bool all = false;
  bool streaming = false;
  std::string store_dir;
  int retrieve = 8;
  int64_t block = 256;
};

int run_eval(const CommonOptions& o, const EvalOptions& e) {
  apply_threads(o.threads);
  CheckpointInfo info = read_checkpoint_info(e.checkpoint);
  Config c = info.config;
  // Data, evaluation size and the memory knobs that do not change parameter shapes may be overridden.
  for (const auto& a : o.overrides) {
    const bool allowed = a.rfind("data.", 0) == 0 || a.rfind("train.eval_batches", 0) == 0 ||
                         a.rfind("train.batch_size", 0) == 0 || a.rfind("train.seed", 0) == 0 ||
                         a.rfind("model.m=", 0) == 0 || a.rfind("model.k=", 0) == 0 ||
                         a.rfind("model.tau=", 0) == 0 || a.rfind("model.eviction=", 0) == 0;
    check(allowed,
          "eval: only data.*, train.batch_size, train.seed, train.eval_batches and the memory knobs model.m, "
          "model.k, model.tau, model.eviction can be overridden, not '" +
              a + "'");
    apply_override(c, a);
  }
  if (c.data.task == "text") c.data.tokenizer = checkpoint_tokenizer_spec(e.checkpoint, info);
  c.validate();
  Model model(c.model);
  load_checkpoint(e.checkpoint, model, nullptr);
  const BatchSource data(c);
  int batches = e.batches > 0 ? e.batches : c.train.eval_batches;
  if (e.all) {
    check(data.text(), "eval: --all applies to the text task (every window of the token file)");
    const int64_t windows = text_windows(*data.eval_file(), c.data.seq_len);
    batches = static_cast<int>((windows + c.train.batch_size - 1) / c.train.batch_size);
  }
  const bool streaming = e.streaming || !e.store_dir.empty();
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r;
  if (streaming) {
    StreamingEvalOptions so;
    so.batches = batches;
    so.block = e.block;
    so.store_dir = e.store_dir;
    so.retrieve = e.retrieve;
    r = evaluate_streaming(model, c, data, so);
  } else {
    r = evaluate_model(model, data, batches);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string mode = !e.store_dir.empty() ? "streaming+store" : streaming ? "streaming" : "parallel";
  const bool text = c.data.task == "text";
  if (o.json) {
    json j{{"loss", r.loss},         {"accuracy", r.accuracy},
           {"labelled", r.labelled}, {"params", model.num_params()},
           {"mode", mode},           {"seq_len", c.data.total_length()},
           {"seconds", secs}};
    if (text) {
      j["perplexity"] = r.perplexity();
      j["bits_per_byte"] = r.bits_per_byte;
      j["bytes"] = r.bytes;
    }
    std::cout << j.dump() << std::endl;
  } else if (text) {
    std::printf(
        "eval %s | step %lld | %s | T %d | loss %.4f | perplexity %.3f | bits/byte %.4f | next-token "
        "accuracy %.4f (%lld tokens, %lld bytes) | %.2f s\n",
        e.checkpoint.c_str(), static_cast<long long>(info.state.step), mode.c_str(), c.data.seq_len, r.loss,
        r.perplexity(), r.bits_per_byte, r.accuracy, static_cast<long long>(r.labelled),
        static_cast<long long>(r.bytes), secs);
  } else
    std::printf("eval %s | step %lld | %s | T %d | loss %.4f | accuracy %.4f (%lld queries) | %.2f s\n",
                e.checkpoint.c_str(), static_cast<long long>(info.state.step), mode.c_str(),
                c.data.total_length(), r.loss, r.accuracy, static_cast<long long>(r.labelled), secs);
  return 0;
}

int run_info(const CommonOptions& o, const std::string& checkpoint, bool tensors) {
  apply_threads(o.threads);
  Config c;
  std::string source = "built-in default config";
  int64_t step = -1;
  if (!checkpoint.empty()) {
    const CheckpointInfo info = read_checkpoint_info(checkpoint);
    c = info.config;
    step = info.state.step;
    source = checkpoint;
  } else {
    c = build_config(o);
    if (!o.config_path.empty()) source = o.config_path;
  }
  // Counted from the layout alone: describing a model never allocates it.
  const ParameterLayout layout = model_layout(c.model);
  const MemoryEstimate train_mem = estimate_training_memory(c);
  const std::string note = blas_environment_note();
  if (o.json) {
    json j = {{"version", BMOJO_VERSION},
              {"blas_core", blas_core_name()},
              {"threads", num_threads()},
              {"cores", num_cores()},
              {"params", layout.num_params()},
              {"config", config_to_json(c)},
              {"training_memory_bytes", train_mem.total()},
              {"machine_memory_bytes", machine_memory_bytes()}};
    if (!note.empty()) j["blas_note"] = note;
    if (step >= 0) j["step"] = step;
    std::cout << j.dump() << std::endl;
    return 0;
  }
  std::printf("bmojo %s\n", BMOJO_VERSION);
  std::printf("BLAS        OpenBLAS, core %s%s%s\n", blas_core_name().c_str(), note.empty() ? "" : "; ",
              note.c_str());
  std::printf("threads     %d (of %d cores)\n", num_threads(), num_cores());
  std::printf("model       %s (%s)\n", c.model.layers.c_str(), source.c_str());
  if (step >= 0) std::printf("step        %lld\n", static_cast<long long>(step));
  std::printf("parameters  %zu\n", layout.num_params());
  std::printf(
      "memory      training at batch %d x %d tokens needs about %s (weights and gradients %s, AdamW %s, "
      "activations %s); this machine has %s\n",
      c.train.batch_size, c.data.total_length(), format_bytes(train_mem.total()).c_str(),
      format_bytes(train_mem.weights).c_str(), format_bytes(train_mem.optimizer).c_str(),
      format_bytes(train_mem.activations).c_str(), format_bytes(machine_memory_bytes()).c_str());
  std::printf("config      %s\n", config_to_json(c).dump().c_str());
  if (tensors)
    for (const TensorSpec& t : layout.tensors())
      std::printf("  %-32s %-16s %zu%s\n", t.name.c_str(), shape_string(t.shape).c_str(), t.numel,
                  t.weight_decay ? "" : "  (no decay)");
  return 0;
}

struct BenchOptions {
  int steps = 10, warmup = 2;
  bool profile = false, skip_peak = false;
};

// The profile table of `bmojo bench --profile`: each kernel's exclusive time per timed step, its share of the
// step, calls per step and, for matrix products, the rate they ran at.
json print_profile(double step_ms_total, int steps, bool as_json) {
  const std::vector<profile::Entry> entries = profile::totals();
  double covered = 0.0;
  json rows = json::array();
  if (!as_json) std::printf("profile (exclusive time per timed step):\n");
  for (const profile::Entry& e : entries) {
    const double ms = e.seconds * 1000.0 / steps;
    covered += e.seconds * 1000.0;
    const double gflops = e.flops > 0 && e.seconds > 0 ? e.flops / e.seconds / 1e9 : 0.0;
    rows.push_back({{"kernel", e.name},
                    {"ms_per_step", ms},
                    {"share", ms * steps / step_ms_total},
                    {"calls_per_step", static_cast<double>(e.calls) / steps},
                    {"gflops", gflops}});
    if (!as_json) {
      std::printf("  %-32s %8.2f ms %5.1f%% %7.1f calls", e.name.c_str(), ms,
                  100.0 * ms * steps / step_ms_total, static_cast<double>(e.calls) / steps);
      if (gflops > 0) std::printf("  %6.1f GFLOP/s", gflops);
      std::printf("\n");
    }
  }
  const double other = std::max(0.0, step_ms_total - covered) / steps;
  rows.push_back({{"kernel", "other"},
                  {"ms_per_step", other},
                  {"share", other * steps / step_ms_total},
                  {"calls_per_step", 0.0},
                  {"gflops", 0.0}});
  if (!as_json)
    std::printf("  %-32s %8.2f ms %5.1f%%   (the step's code outside every scope)\n", "other", other,
                100.0 * other * steps / step_ms_total);
  return rows;
}

int run_bench(const CommonOptions& o, const BenchOptions& b) {
  apply_threads(o.threads);
  const Config c = build_config(o);
  set_matmul_bf16(c.train.bf16_matmul);
  Model model(c.model);
  model.init_weights(c.train.seed);
  AdamW opt(model.layout().slab_size());
  const BatchSource data(c);
  const int T = c.data.total_length(), B = c.train.batch_size;
  std::vector<double> ms;
  double head_fraction = 1.0;
  if (c.data.task == "mqar") head_fraction = static_cast<double>(c.data.num_kv_pairs) / T;
  profile::set_enabled(b.profile);
  for (int i = 0; i < b.warmup + b.steps; ++i) {
    const Batch batch = data.train(static_cast<uint64_t>(i));
    if (i == b.warmup) profile::reset();
    const auto t0 = std::chrono::steady_clock::now();
    {
      const profile::Scope scope("zero_grads");
      model.zero_grads();
    }
    model.forward(batch.inputs.data(), batch.targets.data(), B, T);
    model.backward();
    const double norm = global_norm(model.grads(), model.layout().slab_size());
    if (norm > c.train.grad_clip && c.train.grad_clip > 0)
      scale_in_place(model.grads(), model.layout().slab_size(), static_cast<float>(c.train.grad_clip / norm));
    opt.step(model.params(), model.grads(), model.layout(), static_cast<float>(c.train.lr), c.train);
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= b.warmup) ms.push_back(t);
  }
  profile::set_enabled(false);
  double total = 0.0;
  for (double v : ms) total += v;
  const double mean = total / ms.size();
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double tps = B * T / (median / 1000.0);
  const double flops = training_flops_per_token(c.model, T, head_fraction);
  const double gflops = flops * tps / 1e9;
  PeakMeasurement peak;
  if (!b.skip_peak) peak = measure_fp32_peak(num_threads());
  const NominalPeak nominal = nominal_fp32_peak(num_threads());
  if (o.json) {
    json out{{"layers", c.model.layers},
             {"d_model", c.model.d_model},
             {"T", T},
             {"batch", B},
             {"threads", num_threads()},
             {"blas_core", blas_core_name()},
             {"bf16_matmul", c.train.bf16_matmul},
             {"params", model.num_params()},
             {"ms_per_step_median", median},
             {"ms_per_step_mean", mean},
             {"ms_per_step_min", ms.front()},
             {"ms_per_step_max", ms.back()},
             {"tokens_per_s", tps},
             {"model_flops_per_token", flops},
             {"gflops", gflops},
             {"nominal_peak_gflops", nominal.gflops},
             {"nominal_peak_basis", nominal.basis()},
             {"cpu", cpu_features().summary()}};
    if (!b.skip_peak) {
      out["measured_peak_gflops"] = peak.gflops;
      out["measured_peak_isa"] = peak.isa;
    }
    if (b.profile) out["profile"] = print_profile(total, b.steps, true);
    std::cout << out.dump() << std::endl;
  } else {
    std::printf("bench | layers %s | d_model %d | T %d | batch %d | params %zu | threads %d | BLAS %s%s\n",
                c.model.layers.c_str(), c.model.d_model, T, B, model.num_params(), num_threads(),
                blas_core_name().c_str(), c.train.bf16_matmul ? " | bf16 matmuls (oneDNN)" : "");
    if (b.profile) print_profile(total, b.steps, false);
    if (!b.skip_peak)
      std::printf(
          "fp32 peak: measured now %.1f GFLOP/s (%s multiply-adds, %d threads), nominal %.0f (%s) | "
          "achieved %.0f%% of measured, %.0f%% of nominal\n",
          peak.gflops, peak.isa.c_str(), peak.threads, nominal.gflops, nominal.basis().c_str(),
          100.0 * gflops / peak.gflops, 100.0 * gflops / nominal.gflops);
    std::printf(
        "ms/step median %.2f (min %.2f, max %.2f, %d steps) | %.0f tokens/s | %.2f MFLOP/token | %.1f "
        "GFLOP/s\n",
        median, ms.front(), ms.back(), b.steps, tps, flops / 1e6, gflops);
  }
  return 0;
}

}  // namespace

namespace {

// Output that did not reach its destination (a full disk, a closed pipe, /dev/full) is an error: the
// command's result was not delivered.
int finish_output(int code) {
  std::cout.flush();
  const bool cout_ok = static_cast<bool>(std::cout);
  errno = 0;
  const bool stdout_ok = std::fflush(stdout) == 0 && std::ferror(stdout) == 0;
  if (cout_ok && stdout_ok) return code;
  std::fprintf(stderr, "bmojo: error: writing to standard output failed%s%s\n", errno ? ": " : "",
               errno ? std::strerror(errno) : "");
  return code != 0 ? code : 1;
}

int dispatch(int argc, char** argv);

}  // namespace

int main(int argc, char** argv) {
  bmojo::ensure_native_blas_kernels(argv);
  // A file-size limit (ulimit -f) makes writes fail with EFBIG, reported like a full disk, instead of
  // killing the process half-way through a write.
  std::signal(SIGXFSZ, SIG_IGN);
  return finish_output(dispatch(argc, argv));
}

namespace {

int dispatch(int argc, char** argv) {
  CLI::App app{"bmojo: train, evaluate and run B'MOJO-family models (Transformer, Mamba, hybrids)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("bmojo ") + BMOJO_VERSION);

  CommonOptions train_o, eval_o, info_o, bench_o;
  std::string out_dir, resume, info_ckpt;
  EvalOptions eval_e;
  std::optional<int> steps;
  std::optional<double> lr;
  std::optional<uint64_t> seed;
  int64_t stop_after = -1;
  BenchOptions bench_b;
  bool info_tensors = false;

  auto* train = app.add_subcommand("train", "Train a model (default: the built-in MQAR demo)");
  add_common(train, train_o, true);
  train->add_option("-o,--out", out_dir, "Directory for checkpoint.safetensors and log.jsonl");
  train
      ->add_option("--resume", resume,
                   "Continue from this checkpoint (optimizer, step and data position restored)")
      ->check(CLI::ExistingFile);
  add_integer(train, "--steps", steps, "Total training steps (train.steps)", 0,
              std::numeric_limits<int>::max());
  train->add_option("--lr", lr, "Peak learning rate (train.lr)")->check(CLI::PositiveNumber);
  add_integer(train, "--seed", seed, "Seed for weights and data (train.seed)", uint64_t{0},
              std::numeric_limits<uint64_t>::max());
  add_integer(train, "--stop-after", stop_after,
              "Stop once this many steps are done, keeping the schedule of train.steps (for staged runs)",
              int64_t{0}, std::numeric_limits<int64_t>::max());

  auto* eval = app.add_subcommand("eval", "Evaluate a checkpoint on held-out batches of its task");
  add_common(eval, eval_o, false);
  eval->add_option("checkpoint", eval_e.checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  eval->add_option("-s,--set", eval_o.overrides,
                   "Override data.* (e.g. data.gap=1024), train.eval_batches, or model.m/k/tau/eviction");
  add_integer(eval, "--batches", eval_e.batches, "Number of evaluation batches (default train.eval_batches)",
              1, 1 << 24);
  eval->add_flag(
      "--streaming", eval_e.streaming,
      "Evaluate through streaming inference (a session per sequence) instead of the parallel forward");
  eval->add_option(
      "--store", eval_e.store_dir,
      "Streaming with a long-term memory store per sequence under this directory (removed after)");
  add_integer(eval, "--retrieve", eval_e.retrieve,
              "Store entries read per KV head at each chunk boundary (default 8)", 0, kMaxRetrieve);
  add_integer(eval, "--prefill-block", eval_e.block, "Streaming block size (default 256)", int64_t{1},
              kMaxPrefillBlock);
  eval->add_flag("--all", eval_e.all,
                 "Text task: score every window of the validation token file (e.g. --set "
                 "data.valid_tokens=test.bmtok), not train.eval_batches of them");

  auto* data = app.add_subcommand("data", "Prepare text: train a BPE tokenizer, tokenize into token files");
  data->require_subcommand(1);
  DataTokenizerOptions dt;
  auto* data_tok = data->add_subcommand("tokenizer", "Train a SentencePiece BPE tokenizer on text files");
  data_tok->add_option("-i,--input", dt.inputs, "Text files (one document each) or directories of them")
      ->required();
  data_tok->add_option("-o,--out", dt.out, "Tokenizer model file to write")->required();
  add_integer(data_tok, "--vocab", dt.vocab_size, "Vocabulary size (default 4096)", 260, 1 << 20);
  add_integer(data_tok, "--max-sentences", dt.max_sentences,
              "Sentences sampled for training (default 2000000)", decltype(dt.max_sentences){1},
              std::numeric_limits<decltype(dt.max_sentences)>::max());
  add_integer(data_tok, "--threads", dt.threads, "Threads (default: all cores)", 1, kMaxThreads);
  data_tok->add_flag("--verbose", dt.verbose, "Show SentencePiece's log");
  DataEncodeOptions de;
  auto* data_enc = data->add_subcommand("encode", "Tokenize text files into a token file for training");
  data_enc->add_option("-i,--input", de.inputs, "Text files (one document each) or directories of them")
      ->required();
  data_enc->add_option("-t,--tokenizer", de.tokenizer, "\"byte\" or a tokenizer model file (default byte)");
  data_enc->add_option("-o,--out", de.out, "Token file to write")->required();
  std::string data_info_path;
  bool data_info_json = false;
  auto* data_info = data->add_subcommand("info", "Describe a token file");
  data_info->add_option("file", data_info_path, "Token file")->required()->check(CLI::ExistingFile);
  data_info->add_flag("--json", data_info_json, "One JSON line");

  LengthGenOptions lg;
  auto* lengthgen = app.add_subcommand(
      "lengthgen", "Length generalisation: loss at T, 2T, 4T, 8T and per position bucket, on long documents");
  lengthgen->add_option("checkpoint", lg.checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  lengthgen->add_option("--tokens", lg.tokens, "Token file of held-out documents")
      ->required()
      ->check(CLI::ExistingFile);
  add_integers(lengthgen, "--multiples", lg.multiples, "Multiples of T (default 1,2,4,8)", 1, 1 << 16);
  add_integer(lengthgen, "--train-length", lg.train_length, "T (default: the checkpoint's data.seq_len)",
              decltype(lg.train_length){1}, decltype(lg.train_length){1 << 24});
  add_integer(lengthgen, "--bucket", lg.bucket, "Positions per bucket (default T/4)", decltype(lg.bucket){1},
              std::numeric_limits<decltype(lg.bucket)>::max());
  add_integer(lengthgen, "--max-docs", lg.max_docs, "Documents to score (default 16)",
              decltype(lg.max_docs){1}, std::numeric_limits<decltype(lg.max_docs)>::max());
  add_integer(lengthgen, "--prefill-block", lg.block, "Streaming block size (default 256)",
              decltype(lg.block){1}, decltype(lg.block){kMaxPrefillBlock});
  add_integer(lengthgen, "--threads", lg.threads, "Threads (default: all cores)", 1, kMaxThreads);
  lengthgen->add_option("-o,--out", lg.out, "Also write the JSON result to this file");
  lengthgen->add_flag("--json", lg.json, "Print the result as one JSON line");

  auto* info = app.add_subcommand("info", "Show the build, the BLAS kernels in use, and a model's size");
  add_common(info, info_o, true);
  info->add_option("--checkpoint", info_ckpt, "Describe this checkpoint instead of a config")
      ->check(CLI::ExistingFile);
  info->add_flag("--tensors", info_tensors, "List every parameter tensor");

  auto* bench = app.add_subcommand("bench", "Measure training throughput (tokens/s, achieved GFLOP/s)");
  add_common(bench, bench_o, true);
  add_integer(bench, "--steps", bench_b.steps, "Timed steps", 1, 1 << 20);
  add_integer(bench, "--warmup", bench_b.warmup, "Untimed warm-up steps", 0, 1 << 20);
  bench->add_flag(
      "--profile", bench_b.profile,
      "Also print where the step's time goes: each kernel's exclusive time, share and calls per step");
  bench->add_flag("--no-peak", bench_b.skip_peak,
                  "Skip measuring the machine's fp32 peak (0.3 s) after the timed steps");

  GenerateOptions gen;
  auto* generate = app.add_subcommand(
      "generate",
      "Run a checkpoint on a prompt: streaming inference with bounded state, tokens printed as made");
  generate->add_option("checkpoint", gen.checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  generate->add_option("-p,--prompt", gen.prompt, "Prompt text (or token ids with --ids)");
  generate->add_option("-f,--prompt-file", gen.prompt_file, "Read the prompt from this file ('-' = stdin)");
  generate->add_flag("--ids", gen.ids,
                     "Prompt and output are whitespace-separated token ids (default: byte-level text)");
  add_integer(generate, "-n,--max-tokens", gen.max_tokens, "Tokens to generate (default 64)", int64_t{0},
              kMaxPosition);
  generate->add_option("-t,--temperature", gen.sampling.temperature,
                       "Sampling temperature; 0 = greedy (default 0)");
  add_integer(generate, "--top-k", gen.sampling.top_k, "Sample among the k most likely tokens (0 = all)",
              decltype(gen.sampling.top_k){0}, std::numeric_limits<decltype(gen.sampling.top_k)>::max());
  generate->add_option("--top-p", gen.sampling.top_p, "Nucleus sampling mass in (0, 1] (default 1)");
  add_integer(generate, "--seed", gen.sampling.seed, "Sampling seed (default 0)",
              decltype(gen.sampling.seed){0}, std::numeric_limits<decltype(gen.sampling.seed)>::max());
  generate->add_option("--stop", gen.stop,
                       "Stop when the output contains this string (repeatable; not printed)");
  add_integers(generate, "--stop-id", gen.stop_ids, "Stop when this token id is generated (repeatable)", 0,
               std::numeric_limits<int32_t>::max());
  add_integer(generate, "--prefill-block", gen.prefill_block,
              "Prompt tokens processed per block (default 256)", int64_t{1}, kMaxPrefillBlock);
  generate->add_option("--load-state", gen.load_state, "Start from a state saved by --save-state")
      ->check(CLI::ExistingFile);
  generate->add_option("--save-state", gen.save_state,
                       "Save the state after the prompt, to continue it later with --load-state");
  generate->add_option("--store", gen.store_dir,
                       "Long-term memory store directory for the B layers (created; reopened by later runs)");
  add_integer(generate, "--retrieve", gen.retrieve,
              "Store entries read per KV head at each chunk boundary (default 8)", 0, kMaxRetrieve);
  generate->add_flag("--store-sync", gen.store_sync, "Write the store in the token loop (reproducible runs)");
  add_integer(generate, "--threads", gen.threads, "Threads (default: all cores)", 1, kMaxThreads);
  generate->add_flag("--json", gen.json,
                     "Print one JSON line (text, tokens, speeds, state bytes) instead of streaming");

  InferBenchOptions ib;
  auto* infer_bench = app.add_subcommand(
      "infer-bench",
      "Measure inference: prefill and decode tokens/s and state bytes at several context lengths");
  infer_bench
      ->add_option("-c,--config", ib.config_path, "JSON config file (default: the built-in demo config)")
      ->check(CLI::ExistingFile);
  infer_bench->add_option("--checkpoint", ib.checkpoint, "Benchmark this trained model instead of a config")
      ->check(CLI::ExistingFile);
  infer_bench->add_option("-s,--set", ib.overrides, "Override a config value (repeatable)");
  add_integers(infer_bench, "--contexts", ib.contexts, "Context lengths (default 1024,4096,16384,65536)",
               decltype(ib.contexts)::value_type{1}, decltype(ib.contexts)::value_type{1} << 30);
  add_integer(infer_bench, "--decode", ib.decode_tokens, "Tokens decoded at each context (default 128)",
              decltype(ib.decode_tokens){1}, decltype(ib.decode_tokens){1 << 24});
  add_integer(infer_bench, "--repeats", ib.repeats, "Repetitions for mean and spread (default 3)", 1,
              1 << 16);
  add_integer(infer_bench, "--prefill-block", ib.prefill_block, "Prefill block size (default 512)",
              decltype(ib.prefill_block){1}, decltype(ib.prefill_block){kMaxPrefillBlock});
  add_integer(infer_bench, "--threads", ib.threads, "Threads (default: all cores)", 1, kMaxThreads);
  infer_bench->add_flag("--json", ib.json, "One JSON line per context length");

  ParityDumpOptions pd;
  auto* parity = app.add_subcommand(
      "parity-dump",
      "Write logits, loss and gradients of one batch (for the PyTorch reference's parity tests)");
  parity->add_option("checkpoint", pd.checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  parity->add_option("--tokens", pd.tokens, "Input token ids, raw int32")
      ->required()
      ->check(CLI::ExistingFile);
  parity->add_option("--targets", pd.targets, "Target ids, raw int32 (-100 = not scored)")
      ->required()
      ->check(CLI::ExistingFile);
  add_integer(parity, "--batch", pd.batch, "Sequences in the batch", decltype(pd.batch){1},
              decltype(pd.batch){1 << 20});
  add_integer(parity, "--adam-steps", pd.adam_steps, "AdamW steps on the batch afterwards",
              decltype(pd.adam_steps){0}, decltype(pd.adam_steps){1 << 20});
  parity->add_flag("--reference-kernels", pd.reference_kernels, "Use the plain reference kernels");
  parity->add_option("-o,--out", pd.out, "Output safetensors file")->required();
  add_integer(parity, "--threads", pd.threads, "Threads (default: all cores)", 1, kMaxThreads);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*train) return run_train(train_o, out_dir, resume, steps, lr, seed, stop_after);
    if (*eval) return run_eval(eval_o, eval_e);
    if (*info) return run_info(info_o, info_ckpt, info_tensors);
    if (*bench) return run_bench(bench_o, bench_b);
    if (*generate) return run_generate(gen);
    if (*parity) return run_parity_dump(pd);
    if (*data_tok) return run_data_tokenizer(dt);
    if (*data_enc) return run_data_encode(de);
    if (*data_info) return run_data_info(data_info_path, data_info_json);
    if (*lengthgen) return run_lengthgen(lg);
    if (*infer_bench) {
      ib.fallback = default_config();
      return run_infer_bench(ib);
    }
  } catch (const bmojo::Error& e) {
    std::fprintf(stderr, "bmojo: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bmojo: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace
