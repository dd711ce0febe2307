// SentencePiece tokenizer model files as `data encode`, `eval` and `generate` load them; a model that loads
// must encode and decode.
#include "core/error.hpp"
#include "data/tokenizer.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = bmojo::fuzz::scratch_path("tokenizer.model");
  bmojo::fuzz::write_input(path, data, size);
  try {
    const bmojo::Tokenizer t = bmojo::Tokenizer::load(path);
    const std::vector<int32_t> ids = t.encode("Fellow-Citizens \xff\xfe of the Senate");
    (void)t.decode(ids);
    (void)t.decode(std::vector<int32_t>{-1, 0, 1, 1 << 30});
  } catch (const bmojo::Error&) {
  }
  return 0;
}
