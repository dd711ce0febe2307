// `bmojo bench`: training throughput of full steps, achieved GFLOP/s against the measured and nominal
// peak, and with --profile where the step's time goes.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/cpu_features.hpp"
#include "core/error.hpp"
#include "core/machine_peak.hpp"
#include "core/profile.hpp"
#include "data/batches.hpp"
#include "model/flops.hpp"
#include "model/model.hpp"
#include "profile_table.hpp"
#include "train/adamw.hpp"
#include "train/train_step.hpp"

namespace bmojo {

namespace {

using nlohmann::json;

struct BenchOptions {
  int steps = 10, warmup = 2;
  bool profile = false, skip_peak = false;
};

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
    const StepResult step = train_step(model, opt, batch.inputs.data(), batch.targets.data(), B, T,
                                       static_cast<float>(c.train.lr), c.train);
    check(step.finite, "bench: the step diverged (non-finite loss or gradient); lower train.lr");
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

Command bench_command(CLI::App& app) {
  struct State {
    CommonOptions bench_o;
    BenchOptions bench_b;
  };
  auto s = std::make_shared<State>();
  auto* bench = app.add_subcommand("bench", "Measure training throughput (tokens/s, achieved GFLOP/s)");
  add_common(bench, s->bench_o, true);
  add_integer(bench, "--steps", s->bench_b.steps, "Timed steps", 1, 1 << 20);
  add_integer(bench, "--warmup", s->bench_b.warmup, "Untimed warm-up steps", 0, 1 << 20);
  bench->add_flag(
      "--profile", s->bench_b.profile,
      "Also print where the step's time goes: each kernel's exclusive time, share and calls per step");
  bench->add_flag("--no-peak", s->bench_b.skip_peak,
                  "Skip measuring the machine's fp32 peak (0.3 s) after the timed steps");
  return {bench, [s] { return run_bench(s->bench_o, s->bench_b); }};
}

}  // namespace bmojo
