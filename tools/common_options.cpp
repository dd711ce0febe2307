#include "common_options.hpp"

#include "cli_numbers.hpp"
#include "core/blas.hpp"

namespace bmojo {

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

void add_kv_storage_option(CLI::App* cmd, std::string& storage) {
  cmd->add_option(
         "--kv-storage", storage,
         "How sequence states keep attention keys and values: f32 (default, exact) or bf16 (half the "
         "bytes; decode reads less)")
      ->check(CLI::IsMember({"f32", "bf16"}));
}

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

}  // namespace bmojo
