#include "infer_bench.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "infer/session.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {

namespace {

using Clock = std::chrono::steady_clock;

struct Spread {
  double mean = 0.0, sd = 0.0;
};

Spread spread_of(const std::vector<double>& v) {
  Spread s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

}  // namespace

int run_infer_bench(const InferBenchOptions& o) {
  set_num_threads(o.threads > 0 ? o.threads : num_cores());
  check(!o.contexts.empty(), "--contexts: give at least one context length");
  for (int64_t n : o.contexts) check(n >= 1, "--contexts: lengths must be >= 1, got " + std::to_string(n));
  check(o.decode_tokens >= 1, "--decode must be >= 1");
  check(o.repeats >= 1, "--repeats must be >= 1");
  check(o.config_path.empty() || o.checkpoint.empty(), "give either --config or --checkpoint, not both");
  Config c = o.fallback;
  if (!o.checkpoint.empty())
    c = read_checkpoint_info(o.checkpoint).config;
  else if (!o.config_path.empty())
    c = load_config_file(o.config_path);
  for (const auto& a : o.overrides) apply_override(c, a);
  c.validate();
  Model model(c.model);
  if (!o.checkpoint.empty())
    load_checkpoint(o.checkpoint, model, nullptr);
  else
    model.init_weights(c.train.seed);
  const int V = c.model.vocab_size;
  if (!o.json)
    std::printf("infer-bench | layers %s | d_model %d | window %d | params %zu | threads %d | BLAS %s\n",
                c.model.layers.c_str(), c.model.d_model, c.model.window, model.num_params(), num_threads(),
                blas_core_name().c_str());
  if (!o.json)
    std::printf("%10s %24s %24s %14s\n", "context", "prefill tokens/s", "decode tokens/s", "state bytes");
  Rng rng(c.train.seed);
  std::vector<float> logits(V);
  for (int64_t n : o.contexts) {
    std::vector<int32_t> tokens(n + o.decode_tokens);
    for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));
    std::vector<double> prefill, decode;
    size_t bytes = 0;
    for (int r = 0; r < o.repeats; ++r) {
      Session s(model);
      const auto t0 = Clock::now();
      s.feed(tokens.data(), n, logits.data(), false, o.prefill_block);
      prefill.push_back(n / std::chrono::duration<double>(Clock::now() - t0).count());
      bytes = s.state_bytes();
      const auto t1 = Clock::now();
      for (int64_t i = 0; i < o.decode_tokens; ++i) s.feed(&tokens[n + i], 1, logits.data(), false, 1);
      decode.push_back(o.decode_tokens / std::chrono::duration<double>(Clock::now() - t1).count());
    }
    const Spread p = spread_of(prefill), d = spread_of(decode);
    if (o.json) {
      std::cout << nlohmann::json{{"layers", c.model.layers},
                                  {"d_model", c.model.d_model},
                                  {"window", c.model.window},
                                  {"context", n},
                                  {"prefill_tokens_per_s", p.mean},
                                  {"prefill_sd", p.sd},
                                  {"decode_tokens_per_s", d.mean},
                                  {"decode_sd", d.sd},
                                  {"decode_tokens", o.decode_tokens},
                                  {"repeats", o.repeats},
                                  {"state_bytes", bytes},
                                  {"threads", num_threads()}}
                       .dump()
                << std::endl;
    } else {
      std::printf("%10lld %15.0f ± %-6.0f %15.1f ± %-6.1f %14zu\n", static_cast<long long>(n), p.mean, p.sd,
                  d.mean, d.sd, bytes);
      std::fflush(stdout);
    }
  }
  return 0;
}

Command infer_bench_command(CLI::App& app) {
  struct State {
    InferBenchOptions ib;
  };
  auto s = std::make_shared<State>();
  auto* infer_bench = app.add_subcommand(
      "infer-bench",
      "Measure inference: prefill and decode tokens/s and state bytes at several context lengths");
  infer_bench
      ->add_option("-c,--config", s->ib.config_path, "JSON config file (default: the built-in demo config)")
      ->check(CLI::ExistingFile);
  infer_bench
      ->add_option("--checkpoint", s->ib.checkpoint, "Benchmark this trained model instead of a config")
      ->check(CLI::ExistingFile);
  infer_bench->add_option("-s,--set", s->ib.overrides, "Override a config value (repeatable)");
  add_integers(infer_bench, "--contexts", s->ib.contexts, "Context lengths (default 1024,4096,16384,65536)",
               decltype(s->ib.contexts)::value_type{1}, decltype(s->ib.contexts)::value_type{1} << 30);
  add_integer(infer_bench, "--decode", s->ib.decode_tokens, "Tokens decoded at each context (default 128)",
              decltype(s->ib.decode_tokens){1}, decltype(s->ib.decode_tokens){1 << 24});
  add_integer(infer_bench, "--repeats", s->ib.repeats, "Repetitions for mean and spread (default 3)", 1,
              1 << 16);
  add_integer(infer_bench, "--prefill-block", s->ib.prefill_block, "Prefill block size (default 512)",
              decltype(s->ib.prefill_block){1}, decltype(s->ib.prefill_block){kMaxPrefillBlock});
  add_integer(infer_bench, "--threads", s->ib.threads, "Threads (default: all cores)", 1, kMaxThreads);
  infer_bench->add_flag("--json", s->ib.json, "One JSON line per context length");
  return {infer_bench, [s] { return (s->ib.fallback = default_config(), run_infer_bench(s->ib)); }};
}

}  // namespace bmojo
