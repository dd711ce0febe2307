// Inference state files for a fixed small model with every layer kind, then a few tokens fed from the
// loaded state (alone, and in a batch beside a fresh sequence): whatever a state file claims, the step must
// neither read nor write out of bounds. The model's fingerprint is in the seed corpus (made by
// make_seeds.cpp from the same config and seed); for half the inputs that parse as safetensors the
// harness patches this model's fingerprint into the metadata and skips the checksum, so edited states are
// reached without the fuzzer having to find two 64-bit hashes.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/safetensors.hpp"
#include "fuzz_util.hpp"
#include "infer/session.hpp"
#include "infer/state_file.hpp"

namespace {

bmojo::Model& model() {
  static bmojo::Model* m = [] {
    auto* model = new bmojo::Model(bmojo::fuzz::state_model_config());
    model->init_weights(7);
    return model;
  }();
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bmojo::set_num_threads(1);
  const std::string path = bmojo::fuzz::scratch_path("state.safetensors");
  bmojo::fuzz::write_input(path, data, size);
  try {
    bmojo::SequenceState state;
    const uint64_t h = bmojo::fnv1a64(data, size);
    // A prefix-state cache file carries the tokens of the state (serve/prefix_cache.hpp).
    std::vector<int32_t> prefix_tokens;
    std::vector<int32_t>* tokens_out = h & 2 ? &prefix_tokens : nullptr;
    if (h & 1) {
      bmojo::SafetensorsFile f = bmojo::read_safetensors(path, "state file");
      f.metadata["fingerprint"] = bmojo::hex64(model().fingerprint());
      state = bmojo::sequence_state_from(f, model(), path, tokens_out);
    } else {
      state = bmojo::load_sequence_state(path, model(), tokens_out);
    }
    if (tokens_out != nullptr && static_cast<int64_t>(prefix_tokens.size()) != state.position) std::abort();
    bmojo::BatchSession batch(model());
    const int64_t loaded = batch.join(state), fresh = batch.join();
    const int32_t tokens[5] = {1, 2, 3, 4, 5};
    std::vector<float> logits(2 * static_cast<size_t>(model().config().vocab_size));
    batch.step({{loaded, tokens, 2}, {fresh, tokens, 5}}, logits.data());
    batch.step({{loaded, tokens + 2, 3}}, logits.data());
  } catch (const bmojo::Error&) {
  }
  return 0;
}
