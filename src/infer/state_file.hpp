// Inference state files: one sequence's recurrent state (model/model_step.hpp) as a safetensors file, like
// checkpoints. Metadata: format "bmojo-state", format_version, the model's fingerprint (config and
// weights), the position, the layer letters and kv_storage ("f32", or "bf16": the state kept its
// attention keys and values rounded to bf16; kv, kvf and memory_kv are still written as F32, widened
// exactly, and rounded back on load; absent in older files: f32). Tensors, per layer l and only those the
// layer has:
//   layer<l>.ssm_conv (d_conv - 1, d_inner), layer<l>.ssm_scan (d_inner, d_state)          M, F, B
//   layer<l>.kv (rows, 2 Hk Dh): [rotated k | v] of the last min(W, position) positions    A, F, B
//   layer<l>.kvf (rows, 2 Hk Dh): the same for the fading keys, last min(2W, position)     F, B (fading)
//   layer<l>.y_prev (D), .chunk_scores (W), .chunk_kv (W, 2 Hk Dh), .chunk_qsum (Hk Dh),
//   layer<l>.memory_positions I64 (e), .memory_scores (e), .memory_kv (e, 2 Hk Dh),
//   layer<l>.retrieved<g>_positions I64 (r), .retrieved<g>_kv (r, 2 Dh) per KV head g     B (eidetic)
// The file is written atomically; the checksum (core/safetensors.hpp) catches damage, and on load every
// field is checked against the model field by field (names, shapes, finiteness, positions), since a file
// can be hostile even when its checksum matches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/safetensors.hpp"
#include "model/model.hpp"
#include "model/model_step.hpp"

namespace bmojo {

inline constexpr const char* kStateFormat = "bmojo-state";
inline constexpr int kStateVersion = 3;  // 3: safetensors (2: the binary format with 64-bit positions)

// prefix_tokens, when given, are the state's tokens (one per position), kept as an I64 tensor
// "prefix_tokens" (the server's prefix-state cache files).
void save_sequence_state(const std::string& path, const SequenceState& state, const Model& model,
                         const std::vector<int32_t>* prefix_tokens = nullptr);
// Throws bmojo::Error naming the file and the field for anything that is not a state of this model.
// prefix_tokens, when given, receives the file's prefix tokens, which it must have (checked against the
// position and the vocabulary); without it a file with prefix tokens is refused.
SequenceState load_sequence_state(const std::string& path, const Model& model,
                                  std::vector<int32_t>* prefix_tokens = nullptr);
// The checks and the decoding of load_sequence_state on an already-read file (the fuzz harness calls it).
SequenceState sequence_state_from(const SafetensorsFile& f, const Model& model, const std::string& path,
                                  std::vector<int32_t>* prefix_tokens = nullptr);

}  // namespace bmojo
