// Run configuration: the model (SPEC sections 1-3), training (section 7) and data (section 8).
// Read from JSON; every key is known, every value checked, and `section.key=value` overrides apply on top.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bmojo {

struct ModelConfig {
  int vocab_size = 8192;
  int d_model = 64;
  int n_heads = 2;
  int n_kv_heads = 0;          // 0 = n_heads
  std::string layers = "AA";   // one letter a layer: A attention, M Mamba
  int window = 0;              // attention window W; 0 = full causal span (A only)
  int d_ff = 0;                // SwiGLU hidden size; 0 = no MLP
  int d_state = 16;            // SSM state size N
  int expand = 2;              // d_inner = expand * d_model
  int d_conv = 4;              // causal conv width
  int dt_rank = 0;             // 0 = ceil(d_model / 16)
  float rope_base = 10000.0f;
  float norm_eps = 1e-5f;
  bool tie_embeddings = true;

  int kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int head_dim() const { return d_model / n_heads; }
  int d_inner() const { return expand * d_model; }
  int resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  // Throws bmojo::Error naming the offending key.
  void validate() const;
};

struct TrainConfig {
  int steps = 1000;
  int batch_size = 32;
  float lr = 1e-3f;
  int warmup_steps = 100;
  float min_lr_ratio = 0.1f;  // cosine decays to this fraction of the peak
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f, adam_eps = 1e-8f;
  float grad_clip = 1.0f;     // global-norm clip; 0 = off
  int eval_every = 100;       // 0 = only at the end
  int eval_batches = 8;
  int log_every = 10;
  int checkpoint_every = 0;   // 0 = only at the end
  uint64_t seed = 1234;
  void validate() const;
};

struct DataConfig {
  std::string task = "mqar";  // mqar | random (uniform tokens, every position labelled: for benchmarks)
  int seq_len = 64;            // L
  int num_kv_pairs = 4;        // K
  bool random_non_queries = false;
  int gap = 0;                 // G filler tokens between the pairs and the queries (long-range variant)
  double power_a = 0.01;
  int total_length() const { return seq_len + gap; }
  void validate(int vocab_size) const;
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  void validate() const;
};

Config config_from_json(const nlohmann::json& j);
nlohmann::json config_to_json(const Config& c);
Config load_config_file(const std::string& path);
// Applies "section.key=value" (value parsed as JSON when it parses, else as a string).
void apply_override(Config& c, const std::string& assignment);

}  // namespace bmojo
