// `bmojo info`: the build, the BLAS kernels in use, and a model's size and memory, without allocating it.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/runtime.hpp"
#include "model/memory_estimate.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {

namespace {

using nlohmann::json;

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

}  // namespace

Command info_command(CLI::App& app) {
  struct State {
    CommonOptions info_o;
    std::string info_ckpt;
    bool info_tensors = false;
  };
  auto s = std::make_shared<State>();
  auto* info = app.add_subcommand("info", "Show the build, the BLAS kernels in use, and a model's size");
  add_common(info, s->info_o, true);
  info->add_option("--checkpoint", s->info_ckpt, "Describe this checkpoint instead of a config")
      ->check(CLI::ExistingFile);
  info->add_flag("--tensors", s->info_tensors, "List every parameter tensor");
  return {info, [s] { return run_info(s->info_o, s->info_ckpt, s->info_tensors); }};
}

}  // namespace bmojo
