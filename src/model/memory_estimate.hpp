// Up-front memory estimates, so a config, sequence length, batch or prefill block too large for the machine
// is refused with the figure before anything is allocated (instead of std::bad_alloc, or the kernel's OOM
// killer, half-way through). The estimates count the buffers the code keeps (parameter slabs, AdamW moments,
// activations kept for the backward pass, logits) per token and layer; they aim a little high.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.hpp"

namespace bmojo {

struct MemoryEstimate {
  double weights = 0;      // parameters and gradients (bytes)
  double optimizer = 0;    // AdamW moments
  double activations = 0;  // what one step or block keeps
  double total() const { return weights + optimizer + activations; }
};

// A training step at batch train.batch_size and length data.total_length().
MemoryEstimate estimate_training_memory(const Config& config);
// Streaming inference: the model (weights and gradient slab, and with packed_weights the copy packed for
// steps over several sequences, Model::packed_weights), a prefill block of `block` tokens and the state of
// one sequence at `context` tokens.
MemoryEstimate estimate_inference_memory(const ModelConfig& config, int64_t block, int64_t context,
                                         bool packed_weights = false);

// Bytes of memory this process may use: physical memory, or the cgroup's limit when lower.
double machine_memory_bytes();
// Throws bmojo::Error "<what> needs about X GiB; this machine has Y GiB" when bytes exceed machine memory.
void check_fits_in_memory(double bytes, const std::string& what);
std::string format_bytes(double bytes);  // "3.20 GiB", "512.0 MiB"

}  // namespace bmojo
