// Checkpoints are safetensors files: an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian fp32 data. The header's __metadata__
// holds the format tag, the run's config and the training state. Files are written to a temporary name,
// synced and renamed, so an interrupted write never replaces a good checkpoint.
#pragma once
#include <cstdint>
#include <string>

#include "core/rng.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "train/adamw.hpp"

namespace bmojo {

inline constexpr const char* kCheckpointFormat = "bmojo-checkpoint";
inline constexpr int kCheckpointVersion = 1;

struct TrainingState {
  int64_t step = 0;            // optimizer updates done
  uint64_t data_position = 0;  // next training batch index
  Rng::State rng{};
  // Hash of the tokenizer of the text the model was trained on (data/tokenizer.hpp); 0 for the synthetic
  // tasks. Evaluation and generation check the tokenizer they load against it.
  uint64_t tokenizer_hash = 0;
  // Rows per optimizer step over all ranks and micro-batches (data_position counts batches of it); 0 in
  // checkpoints written before it was recorded.
  int64_t global_batch = 0;
};

struct CheckpointInfo {
  Config config;
  TrainingState state;
  bool has_optimizer = false;
};

// optimizer may be null (weights only).
void save_checkpoint(const std::string& path, const Config& config, const Model& model,
                     const AdamW* optimizer, const TrainingState& state);

// Reads and validates the header: format, version, config, training state, every tensor's byte range.
CheckpointInfo read_checkpoint_info(const std::string& path);

// Loads weights (and moments when optimizer is given) into a model built from a config; every tensor's
// shape must match what the model expects.
CheckpointInfo load_checkpoint(const std::string& path, Model& model, AdamW* optimizer);

// The tokenizer a checkpoint was trained with: "byte", the tokenizer.model next to the checkpoint (the
// trainer copies it there), or the config's data.tokenizer path. Throws when none of them matches the hash
// the checkpoint records (a model never runs with a tokenizer it was not trained with). For checkpoints
// of the synthetic tasks (no hash) it returns "byte".
std::string checkpoint_tokenizer_spec(const std::string& checkpoint_path, const CheckpointInfo& info);

}  // namespace bmojo
