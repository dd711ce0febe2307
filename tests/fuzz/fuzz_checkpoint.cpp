// Checkpoint files: the header, the metadata's config and training state, then the tensors into a model of
// that config when it is small.
#include "core/blas.hpp"
#include "core/error.hpp"
#include "fuzz_util.hpp"
#include "train/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bmojo::set_num_threads(1);
  const std::string path = bmojo::fuzz::scratch_path("checkpoint.safetensors");
  bmojo::fuzz::write_input(path, data, size);
  try {
    const bmojo::CheckpointInfo info = bmojo::read_checkpoint_info(path);
    if (bmojo::model_layout(info.config.model).slab_size() > (1u << 20)) return 0;
    bmojo::Model model(info.config.model);
    bmojo::AdamW opt(model.layout().slab_size());
    bmojo::load_checkpoint(path, model, info.has_optimizer ? &opt : nullptr);
  } catch (const bmojo::Error&) {
  }
  return 0;
}
