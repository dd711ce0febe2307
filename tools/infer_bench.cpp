#include "infer_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/machine_peak.hpp"
#include "core/profile.hpp"
#include "core/rng.hpp"
#include "infer/session.hpp"
#include "model/config.hpp"
#include "model/flops.hpp"
#include "model/model.hpp"
#include "profile_table.hpp"
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

// Bytes of weights one decode step reads, however many sequences it advances: every weight matrix (the
// embedding only one row per sequence, unless the LM head shares it).
double decode_weight_bytes(const Model& model) {
  const ModelConfig& c = model.config();
  double weights = static_cast<double>(model.num_params()) * sizeof(float);
  if (!c.tie_embeddings) weights -= static_cast<double>(c.vocab_size - 1) * c.d_model * sizeof(float);
  return weights;
}

// The most that batching can gain: a step of n sequences reads the weights once (w bytes) and each
// sequence's state (s bytes, SequenceState::decode_read_bytes), so if every byte comes from memory at the
// same rate, n sequences give at most n (w + s) / (w + n s) times one sequence's aggregate tokens/s.
double batching_bound(double w, double s, int64_t n) {
  return static_cast<double>(n) * (w + s) / (w + static_cast<double>(n) * s);
}

// Aggregate decode tokens/s of `sequences` sequences, each prefilled with `context` tokens of its own,
// then advanced one token each per step for `decode` steps.
struct BatchRun {
  double tokens_per_s = 0.0;
  double decode_ms = 0.0;   // wall time of the decode steps
  size_t state_bytes = 0;   // per sequence, after the prefill
  double read_bytes = 0.0;  // of that state, what one decode step reads (per sequence)
};

BatchRun run_batch(const Model& model, KvStorage storage, int64_t sequences, int64_t context, int64_t decode,
                   int64_t block, bool profiled, Rng& rng) {
  const int V = model.config().vocab_size;
  BatchSession batch(model, storage);
  std::vector<int64_t> ids;
  std::vector<std::vector<int32_t>> tokens(sequences);
  for (int64_t q = 0; q < sequences; ++q) {
    ids.push_back(batch.join());
    tokens[q].resize(context + decode);
    for (auto& t : tokens[q]) t = static_cast<int32_t>(rng.below(V));
    for (int64_t s = 0; s < context; s += block)
      batch.step({{ids[q], tokens[q].data() + s, std::min(block, context - s)}}, nullptr);
  }
  BatchRun r;
  r.state_bytes = batch.state(ids[0]).bytes();
  r.read_bytes = batch.state(ids[0]).decode_read_bytes();
  std::vector<float> logits(sequences * V);
  std::vector<BatchSession::Input> inputs(sequences);
  // A model packs its weights for steps over several sequences once, at the first such step (a server's
  // first batch): not part of the decode rate.
  if (sequences > 1) model.packed_weights();
  profile::reset();
  profile::set_enabled(profiled);
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < decode; ++i) {
    for (int64_t q = 0; q < sequences; ++q) inputs[q] = {ids[q], tokens[q].data() + context + i, 1};
    batch.step(inputs, logits.data());
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  profile::set_enabled(false);
  r.tokens_per_s = sequences * decode / seconds;
  r.decode_ms = seconds * 1000.0;
  return r;
}

int run_batched(const InferBenchOptions& o, const Config& c, const Model& model, KvStorage storage) {
  for (int64_t n : o.concurrent)
    check(n >= 1 && n <= 4096,
          "--concurrent: sequence counts must be in [1, 4096], got " + std::to_string(n));
  const double probe = o.bandwidth ? measure_read_bandwidth(num_threads()) : 0.0;
  const double peak = o.bandwidth ? measure_fp32_peak(num_threads()).gflops : 0.0;
  const NominalPeak nominal = o.bandwidth ? nominal_fp32_peak(num_threads()) : NominalPeak{};
  if (!o.json) {
    std::printf("%10s %10s %24s %18s %10s %8s %14s %12s %14s%s\n", "context", "sequences",
                "decode tokens/s (all)", "per sequence", "vs one", "bound", "state bytes", "read/step",
                "vs one, rounds", peak > 0.0 ? "  flops cap" : "");
  }
  Rng rng(c.train.seed);
  const size_t counts = o.concurrent.size();
  for (int64_t n : o.contexts) {
    // The repetitions run in rounds, every sequence count once per round, so that a shared machine's
    // drift (minutes long) moves all of them alike and the ratios to one sequence compare like with like.
    std::vector<std::vector<double>> rates(counts);
    std::vector<nlohmann::json> profiles(counts);  // each count's last round (--profile)
    size_t bytes = 0;
    double read = 0.0;
    for (int r = 0; r < o.repeats; ++r) {
      for (size_t i = 0; i < counts; ++i) {
        const BatchRun run =
            run_batch(model, storage, o.concurrent[i], n, o.decode_tokens, o.prefill_block, o.profile, rng);
        rates[i].push_back(run.tokens_per_s);
        bytes = run.state_bytes;
        read = run.read_bytes;
        if (o.profile && r + 1 == o.repeats)
          profiles[i] = print_profile(run.decode_ms, o.decode_tokens, true);
      }
    }
    double one = 0.0;
    const std::vector<double>* one_rounds = nullptr;
    for (size_t i = 0; i < counts; ++i)
      if (o.concurrent[i] == 1) {
        one = spread_of(rates[i]).mean;
        one_rounds = &rates[i];
      }
    // The other ceiling: n sequences' step does n tokens' multiply-adds, so it takes at least n F / peak
    // seconds, and n sequences can be at most t1 peak / F times one sequence (t1 = 1 / its tokens/s),
    // whatever n is. A single sequence fast enough (its weights streaming from a cache, or memory fast
    // against the FMA units) leaves batching little to gain; batching_bound does not see that. The peak
    // is the larger of the measured and the nominal one: a thread descheduled during the short FMA loop
    // halves the measurement, and a ceiling must not come out too low.
    const double flops = forward_flops_per_token(c.model, static_cast<int>(n), 1.0);
    const double top = std::max(peak, nominal.gflops);
    const double cap = top > 0.0 && one > 0.0 ? top * 1e9 / (flops * one) : 0.0;
    for (size_t i = 0; i < counts; ++i) {
      const int64_t seqs = o.concurrent[i];
      const Spread d = spread_of(rates[i]);
      const double ratio = one > 0.0 ? d.mean / one : 0.0;
      // The ratio within each round (the counts of a round ran minutes apart at most): its least and
      // largest show how far a shared machine's drift moves the ratio itself.
      std::vector<double> round_ratios;
      if (one_rounds != nullptr)
        for (size_t r = 0; r < rates[i].size(); ++r)
          if ((*one_rounds)[r] > 0.0) round_ratios.push_back(rates[i][r] / (*one_rounds)[r]);
      const auto [lo, hi] =
          round_ratios.empty()
              ? std::pair<double, double>{0.0, 0.0}
              : std::pair<double, double>{*std::min_element(round_ratios.begin(), round_ratios.end()),
                                          *std::max_element(round_ratios.begin(), round_ratios.end())};
      // Decode of one sequence reads the weights and its state once per token: its GB/s against the probe.
      const double weights = decode_weight_bytes(model), bound = batching_bound(weights, read, seqs);
      const double gbs = seqs == 1 ? d.mean * (weights + read) / 1e9 : 0.0;
      if (o.json) {
        nlohmann::json j{{"layers", c.model.layers},
                         {"d_model", c.model.d_model},
                         {"window", c.model.window},
                         {"params", model.num_params()},
                         {"kv_storage", kv_storage_name(storage)},
                         {"context", n},
                         {"sequences", seqs},
                         {"decode_tokens_per_s", d.mean},
                         {"decode_sd", d.sd},
                         {"vs_one", ratio},
                         {"vs_one_rounds", round_ratios},
                         {"bound_vs_one", bound},
                         {"state_bytes_per_sequence", bytes},
                         {"state_read_bytes_per_sequence_step", read},
                         {"weight_read_bytes_per_step", weights},
                         {"decode_tokens", o.decode_tokens},
                         {"repeats", o.repeats},
                         {"threads", num_threads()}};
        if (seqs == 1) j["decode_read_gb_per_s"] = gbs;
        if (probe > 0.0) j["read_bandwidth_gb_per_s"] = probe;
        if (peak > 0.0) {
          j["fp32_peak_gflops"] = peak;
          j["nominal_fp32_peak_gflops"] = nominal.gflops;
          j["decode_flops_per_token"] = flops;
          j["flops_cap_vs_one"] = cap;
        }
        if (o.profile) j["profile"] = profiles[i];
        std::cout << j.dump() << std::endl;
      } else {
        char rounds[48] = "";
        if (!round_ratios.empty()) std::snprintf(rounds, sizeof(rounds), "%.2f-%.2fx", lo, hi);
        char capped[24] = "";
        if (cap > 0.0) std::snprintf(capped, sizeof(capped), " %9.2fx", cap);
        std::printf("%10lld %10lld %15.1f ± %-6.1f %18.1f %9.2fx %7.2fx %14zu %12.0f %14s%s\n",
                    static_cast<long long>(n), static_cast<long long>(seqs), d.mean, d.sd, d.mean / seqs,
                    ratio, bound, bytes, read, rounds, capped);
        if (seqs == 1 && probe > 0.0)
          std::printf(
              "%21s one sequence reads %.1f MB per token: %.1f GB/s, %.0f%% of the %.1f GB/s read "
              "bandwidth measured now;\n%21s it does %.1f MFLOP a token: %.1f GFLOP/s, against an fp32 peak "
              "of %.0f GFLOP/s measured now (nominal %.0f: %s; flops cap: %.2fx)\n",
              "", (weights + read) / 1e6, gbs, 100.0 * gbs / probe, probe, "", flops / 1e6,
              flops * d.mean / 1e9, peak, nominal.gflops, nominal.basis().c_str(), cap);
        if (o.profile) print_profile_rows(profiles[i]);
        std::fflush(stdout);
      }
    }
  }
  return 0;
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
  const KvStorage storage = parse_kv_storage(o.kv_storage, "--kv-storage");
  if (!o.json)
    std::printf(
        "infer-bench | layers %s | d_model %d | window %d | params %zu | keys/values %s | threads %d | BLAS "
        "%s\n",
        c.model.layers.c_str(), c.model.d_model, c.model.window, model.num_params(), kv_storage_name(storage),
        num_threads(), blas_core_name().c_str());
  if (!o.concurrent.empty()) return run_batched(o, c, model, storage);
  check(!o.profile, "--profile needs --concurrent (it profiles the batched decode steps)");
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
      Session s(model, storage);
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
                                  {"kv_storage", kv_storage_name(storage)},
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
  add_integer(infer_bench, "--repeats", s->ib.repeats,
              "Repetitions for mean and spread (default 3; with --concurrent, rounds of every count)", 1,
              1 << 16);
  add_integer(infer_bench, "--prefill-block", s->ib.prefill_block, "Prefill block size (default 512)",
              decltype(s->ib.prefill_block){1}, decltype(s->ib.prefill_block){kMaxPrefillBlock});
  add_integer(infer_bench, "--threads", s->ib.threads, "Threads (default: all cores)", 1, kMaxThreads);
  infer_bench->add_flag("--json", s->ib.json, "One JSON line per context length");
  add_kv_storage_option(infer_bench, s->ib.kv_storage);
  add_integers(infer_bench, "--concurrent", s->ib.concurrent,
               "Batched decode: sequences decoded together, e.g. 1,4,16,64 (aggregate tokens/s per count)",
               decltype(s->ib.concurrent)::value_type{1}, decltype(s->ib.concurrent)::value_type{4096});
  infer_bench->add_flag(
      "--bandwidth", s->ib.bandwidth,
      "With --concurrent: measure the memory read bandwidth and the fp32 peak, one sequence's share of the "
      "first and the flops cap on batching the second gives");
  infer_bench->add_flag("--profile", s->ib.profile,
                        "With --concurrent: where a decode step's time goes, by kernel (last repetition)");
  return {infer_bench, [s] { return (s->ib.fallback = default_config(), run_infer_bench(s->ib)); }};
}

}  // namespace bmojo
