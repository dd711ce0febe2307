// Run configuration: the model (SPEC sections 1-3), training (section 7) and data (section 8).
// Read from JSON; every key is known, every value checked, and `section.key=value` overrides apply on top.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace bmojo {

struct ModelConfig {
  int vocab_size = 8192;
  int d_model = 64;
  int n_heads = 2;
  int n_kv_heads = 0;         // 0 = n_heads
  std::string layers = "AA";  // one letter a layer: A attention, M Mamba, F B'MOJO-F, B B'MOJO
  int window = 0;             // attention window W; 0 = full causal span (A only; F and B need W >= 1)
  int d_ff = 0;               // SwiGLU hidden size; 0 = no MLP
  int d_state = 16;           // SSM state size N
  int expand = 2;             // d_inner = expand * d_model
  int d_conv = 4;             // causal conv width
  int dt_rank = 0;            // 0 = ceil(d_model / 16)
  double rope_base = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = true;
  // F and B layers (SPEC sections 3-4).
  bool fading = true;             // the SSM branch feeds fading keys; false turns F into windowed A
  bool tie_fading = true;         // fading keys/values use Wk, Wv; false: separate projections
  int eidetic_per_chunk = 4;      // k: tokens promoted per complete chunk of W (JSON key "k"; k <= W)
  int eidetic_capacity = 64;      // m: entries the memory holds (JSON key "m")
  double tau = 0.0;               // promotion threshold on the innovation score
  double lambda_innov = 0.1;      // weight of the innovation loss
  std::string eviction = "fifo";  // fifo | lowest_score

  int kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int head_dim() const { return d_model / n_heads; }
  int d_inner() const { return expand * d_model; }
  int resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  // Throws bmojo::Error naming the offending key.
  void validate() const;
};

// The sub-blocks a layer of kind `letter` has under this config: the one rule the parameter layout, the
// parallel forward and backward, the recurrent step and the FLOP and memory counts all follow.
struct LayerParts {
  bool attention = false;          // A, F, B: QKV and output projections, attention over the window
  bool ssm = false;                // M; B; F with fading: the selective SSM branch (Mamba weights)
  bool fading = false;             // F, B with model.fading: SSM outputs projected into fading keys/values
  bool fading_projection = false;  // fading with tie_fading = false: its own [Wk | Wv] (attn.wkvf)
  bool innovation = false;         // B: the innovation predictor P
  bool eidetic = false;            // B with k > 0 and m > 0: the eidetic memory
  bool mlp = false;                // d_ff > 0
};
LayerParts layer_parts(char letter, const ModelConfig& config);

struct TrainConfig {
  int steps = 1000;
  int batch_size = 32;  // rows per micro-batch and rank
  int grad_accum = 1;   // micro-batches per optimizer step (global batch = ranks x grad_accum x batch_size)
  double lr = 1e-3;
  int warmup_steps = 100;
  double min_lr_ratio = 0.1;  // cosine decays to this fraction of the peak
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  double grad_clip = 1.0;      // global-norm clip; 0 = off
  int eval_every = 100;        // 0 = only at the end
  double stop_accuracy = 0.0;  // an evaluation at least this accurate ends the run there; 0 = never
  int eval_batches = 8;
  int log_every = 10;
  int checkpoint_every = 0;  // 0 = only at the end
  uint64_t seed = 1234;
  bool bf16_matmul = false;  // matrix products with bf16 inputs, fp32 accumulation (core/blas.hpp)
  void validate() const;
};

struct DataConfig {
  std::string task = "mqar";  // mqar | random (uniform tokens, for benchmarks) | text (token files)
  int seq_len = 64;           // L; for text, the training length T
  int num_kv_pairs = 4;       // K
  bool random_non_queries = false;
  int gap = 0;  // G filler tokens between the pairs and the queries (long-range variant)
  double power_a = 0.01;
  // task "text": token files made by `bmojo data encode` (paths relative to the working directory) and
  // the tokenizer they were made with ("byte" or a SentencePiece model file).
  std::string train_tokens;
  std::string valid_tokens;
  std::string tokenizer = "byte";
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
