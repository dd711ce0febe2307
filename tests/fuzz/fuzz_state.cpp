// Inference state files for a fixed small model with every layer kind, then a few tokens fed from the
// loaded state: whatever a state file claims, the session must neither read nor write out of bounds. The
// model's fingerprint is in the seed corpus (made by make_seeds.sh from the same config and seed); the
// harness also accepts states whose fingerprint it patches in itself, so checksummed crafted states are
// reached without the fuzzer having to find a 64-bit hash.
#include <cstring>
#include <vector>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "fuzz_util.hpp"
#include "infer/session.hpp"

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
  const std::string path = bmojo::fuzz::scratch_path("state.bmstate");
  std::string bytes(reinterpret_cast<const char*>(data), size);
  // Half the inputs (by their hash) are taken as they are, half get this model's fingerprint and a valid
  // checksum patched in.
  if ((bmojo::fnv1a64(data, size) & 1) && bytes.size() >= 8 + 4 + 8 + 8) {
    const uint64_t fp = model().fingerprint();
    std::memcpy(bytes.data() + 12, &fp, 8);
    const uint64_t sum = bmojo::fnv1a64(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  bmojo::fuzz::write_input(path, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  try {
    bmojo::Session s(model());
    s.load(path);
    const int32_t tokens[5] = {1, 2, 3, 4, 5};
    std::vector<float> logits(40);
    s.feed(tokens, 5, logits.data(), false, 2);
  } catch (const bmojo::Error&) {
  }
  return 0;
}
