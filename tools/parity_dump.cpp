#include "parity_dump.hpp"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/safetensors.hpp"
#include "model/model.hpp"
#include "train/adamw.hpp"
#include "train/checkpoint.hpp"

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
    model.zero_grads();
    const LossResult l = model.forward(tokens.data(), targets.data(), B, T);
    model.backward();
    losses.push_back(static_cast<float>(l.objective()));
    const double norm = global_norm(model.grads(), model.layout().slab_size());
    if (c.train.grad_clip > 0 && norm > c.train.grad_clip)
      scale_in_place(model.grads(), model.layout().slab_size(), static_cast<float>(c.train.grad_clip / norm));
    opt.step(model.params(), model.grads(), model.layout(), static_cast<float>(c.train.lr), c.train);
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

}  // namespace bmojo
