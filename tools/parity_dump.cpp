#include "parity_dump.hpp"

#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/safetensors.hpp"
#include "model/model.hpp"
#include "train/adamw.hpp"
#include "train/checkpoint.hpp"
#include "train/train_step.hpp"

namespace bmojo {

namespace {

std::vector<int32_t> read_ids(const std::string& path) {
  const std::string bytes = read_file(path);
  check(bytes.size() % 4 == 0, "parity-dump: '" + path + "' is not a whole number of int32 token ids");
  std::vector<int32_t> ids(bytes.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), bytes.data(), bytes.size());
  return ids;
}

}  // namespace

int run_parity_dump(const ParityDumpOptions& o) {
  set_num_threads(o.threads > 0 ? o.threads : num_cores());
  const CheckpointInfo info = read_checkpoint_info(o.checkpoint);
  const Config& c = info.config;
  Model model(c.model);
  load_checkpoint(o.checkpoint, model, nullptr);
  model.set_reference_kernels(o.reference_kernels);
  const std::vector<int32_t> tokens = read_ids(o.tokens), targets = read_ids(o.targets);
  check(o.batch >= 1 && !tokens.empty() && tokens.size() % o.batch == 0,
        "parity-dump: the token count is not a positive multiple of --batch");
  check(targets.size() == tokens.size(), "parity-dump: tokens and targets differ in length");
  const int B = o.batch, T = static_cast<int>(tokens.size() / B), V = c.model.vocab_size;

  std::vector<float> logits(static_cast<size_t>(B) * T * V);
  model.logits(tokens.data(), B, T, logits.data());
  model.zero_grads();
  const LossResult r = model.forward(tokens.data(), targets.data(), B, T);
  model.backward();
  const std::vector<float> grads(model.grads(), model.grads() + model.layout().slab_size());
  const float loss = static_cast<float>(r.loss), innovation = static_cast<float>(r.innovation_loss);

  // AdamW on the same batch.
  std::vector<float> losses;
  AdamW opt(model.layout().slab_size());
  for (int s = 0; s < o.adam_steps; ++s) {
    const StepResult step =
        train_step(model, opt, tokens.data(), targets.data(), B, T, static_cast<float>(c.train.lr), c.train);
    losses.push_back(static_cast<float>(step.loss.objective()));
  }

  std::vector<SafetensorsItem> items = {
      {"logits", {B, T, V}, logits.data()}, {"loss", {1}, &loss}, {"innovation_loss", {1}, &innovation}};
  if (!losses.empty())
    items.push_back({"adam_objectives", {static_cast<int64_t>(losses.size())}, losses.data()});
  for (const TensorSpec& t : model.layout().tensors())
    items.push_back({"grad." + t.name, t.shape, grads.data() + t.offset});
  write_safetensors(o.out, items, {{"config", config_to_json(c).dump()}}, "parity-dump");
  std::printf("parity-dump: loss %.6f, innovation loss %.6f, %d AdamW steps, wrote %s\n", loss, innovation,
              o.adam_steps, o.out.c_str());
  return 0;
}

Command parity_dump_command(CLI::App& app) {
  struct State {
    ParityDumpOptions pd;
  };
  auto s = std::make_shared<State>();
  auto* parity = app.add_subcommand(
      "parity-dump",
      "Write logits, loss and gradients of one batch (for the PyTorch reference's parity tests)");
  parity->add_option("checkpoint", s->pd.checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  parity->add_option("--tokens", s->pd.tokens, "Input token ids, raw int32")
      ->required()
      ->check(CLI::ExistingFile);
  parity->add_option("--targets", s->pd.targets, "Target ids, raw int32 (-100 = not scored)")
      ->required()
      ->check(CLI::ExistingFile);
  add_integer(parity, "--batch", s->pd.batch, "Sequences in the batch", decltype(s->pd.batch){1},
              decltype(s->pd.batch){1 << 20});
  add_integer(parity, "--adam-steps", s->pd.adam_steps, "AdamW steps on the batch afterwards",
              decltype(s->pd.adam_steps){0}, decltype(s->pd.adam_steps){1 << 20});
  parity->add_flag("--reference-kernels", s->pd.reference_kernels, "Use the plain reference kernels");
  parity->add_option("-o,--out", s->pd.out, "Output safetensors file")->required();
  add_integer(parity, "--threads", s->pd.threads, "Threads (default: all cores)", 1, kMaxThreads);
  return {parity, [s] { return run_parity_dump(s->pd); }};
}

}  // namespace bmojo
