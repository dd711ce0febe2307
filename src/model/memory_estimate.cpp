#include "model/memory_estimate.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/error.hpp"
#include "model/model.hpp"

namespace bmojo {

namespace {

// Floats one token keeps per layer during a training step (forward activations kept for the backward pass,
// with the backward scratch of the largest layer counted once per layer to stay on the high side).
double floats_per_token_and_layer(const ModelConfig& c, char kind) {
  const double D = c.d_model, width = (c.n_heads + 2.0 * c.kv_heads()) * c.head_dim();
  const double C = c.d_inner(), N = c.d_state, R = c.resolved_dt_rank();
  const LayerParts parts = layer_parts(kind, c);
  double f = 6 * D;  // residual stream, normed inputs, their gradients
  if (parts.attention) f += 3 * width + 2 * D + c.n_heads;
  if (parts.fading || parts.innovation) f += 8.0 * c.kv_heads() * c.head_dim() + 4 * D;
  if (parts.ssm) f += 10 * C + 2 * (R + 2 * N) + C * N / 8.0;
  if (parts.mlp) f += 6.0 * c.d_ff;
  return f;
}

double slab_floats(const ModelConfig& c) {
  return static_cast<double>(model_layout(c).slab_size());
}

}  // namespace

MemoryEstimate estimate_training_memory(const Config& config) {
  const ModelConfig& c = config.model;
  MemoryEstimate e;
  const double slab = slab_floats(c) * sizeof(float);
  e.weights = 2 * slab;
  e.optimizer = 2 * slab;
  const double tokens = static_cast<double>(config.train.batch_size) * config.data.total_length();
  double per_token = 0;
  for (char kind : c.layers) per_token += floats_per_token_and_layer(c, kind);
  // Logits, their gradients and the softmax, for the rows that reach the head: MQAR scores only its K
  // queries per sequence, the other tasks every position.
  double head_rows = tokens;
  if (config.data.task == "mqar")
    head_rows = static_cast<double>(config.train.batch_size) * config.data.num_kv_pairs;
  e.activations = (tokens * per_token + head_rows * 2.0 * c.vocab_size) * sizeof(float);
  return e;
}

MemoryEstimate estimate_inference_memory(const ModelConfig& c, int64_t block, int64_t context,
                                         bool packed_weights) {
  MemoryEstimate e;
  e.weights = (packed_weights ? 3 : 2) * slab_floats(c) * sizeof(float);
  double per_token = 0;
  for (char kind : c.layers) per_token += floats_per_token_and_layer(c, kind) / 2;  // no gradients
  per_token += c.vocab_size;
  double state = 0;
  const double kv_row = 2.0 * c.kv_heads() * c.head_dim();
  for (char kind : c.layers) {
    const LayerParts parts = layer_parts(kind, c);
    if (parts.attention) state += kv_row * (c.window > 0 ? c.window + block : context + block);
    if (parts.fading) state += kv_row * (2.0 * c.window + block);
    if (parts.eidetic) state += kv_row * c.eidetic_capacity;
    if (parts.ssm) state += static_cast<double>(c.d_inner()) * (c.d_state + c.d_conv);
  }
  e.activations = (static_cast<double>(block) * per_token + state) * sizeof(float);
  return e;
}

double machine_memory_bytes() {
  double bytes =
      static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  std::ifstream cg("/sys/fs/cgroup/memory.max");
  double limit = 0;
  if (cg >> limit && limit > 0 && limit < bytes) bytes = limit;
  return bytes;
}

std::string format_bytes(double bytes) {
  char buf[64];
  if (bytes >= 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024));
  return buf;
}

void check_fits_in_memory(double bytes, const std::string& what) {
  const double have = machine_memory_bytes();
  if (bytes > have)
    fail(what + " needs about " + format_bytes(bytes) + "; this machine has " + format_bytes(have) +
         " of memory");
}

}  // namespace bmojo
