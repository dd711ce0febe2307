// What several commands share: the built-in default config (the MQAR demo), the --config/--set/--threads/
// --json options and the config they build.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "model/config.hpp"

namespace bmojo {

// The built-in default: MQAR at L=64, K=4 (SPEC section 8), a 2-layer B'MOJO model without MLP.
Config default_config();

struct CommonOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  int threads = 0;
  bool json = false;
};

inline constexpr int kMaxThreads = 4096;
inline constexpr int64_t kMaxPrefillBlock = 1 << 16;

void add_common(CLI::App* cmd, CommonOptions& o, bool with_config);
// --kv-storage f32|bf16: how inference states keep their attention keys and values (model/layer_state.hpp).
void add_kv_storage_option(CLI::App* cmd, std::string& storage);
// The config file (or the default), the --set overrides applied, validated.
Config build_config(const CommonOptions& o);
void apply_threads(int threads);

}  // namespace bmojo
