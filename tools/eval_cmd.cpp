// `bmojo eval`: evaluate a checkpoint, in parallel or through streaming inference (with a store).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "data/batches.hpp"
#include "infer/session.hpp"
#include "infer/streaming_eval.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {

namespace {

using nlohmann::json;

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

}  // namespace

Command eval_command(CLI::App& app) {
  struct State {
    CommonOptions eval_o;
    EvalOptions eval_e;
  };
  auto s = std::make_shared<State>();
  auto* eval = app.add_subcommand("eval", "Evaluate a checkpoint on held-out batches of its task");
  add_common(eval, s->eval_o, false);
  eval->add_option("checkpoint", s->eval_e.checkpoint, "Checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  eval->add_option("-s,--set", s->eval_o.overrides,
                   "Override data.* (e.g. data.gap=1024), train.eval_batches, or model.m/k/tau/eviction");
  add_integer(eval, "--batches", s->eval_e.batches,
              "Number of evaluation batches (default train.eval_batches)", 1, 1 << 24);
  eval->add_flag(
      "--streaming", s->eval_e.streaming,
      "Evaluate through streaming inference (a session per sequence) instead of the parallel forward");
  eval->add_option(
      "--store", s->eval_e.store_dir,
      "Streaming with a long-term memory store per sequence under this directory (removed after)");
  add_integer(eval, "--retrieve", s->eval_e.retrieve,
              "Store entries read per KV head at each chunk boundary (default 8)", 0, kMaxRetrieve);
  add_integer(eval, "--prefill-block", s->eval_e.block, "Streaming block size (default 256)", int64_t{1},
              kMaxPrefillBlock);
  eval->add_flag("--all", s->eval_e.all,
                 "Text task: score every window of the validation token file (e.g. --set "
                 "data.valid_tokens=test.bmtok), not train.eval_batches of them");
  return {eval, [s] { return run_eval(s->eval_o, s->eval_e); }};
}

}  // namespace bmojo
