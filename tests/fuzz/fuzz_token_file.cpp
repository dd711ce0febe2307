// Token files (`bmojo data encode`): header, per-token byte lengths, document offsets, tokens; then every
// token and document boundary read back as training and evaluation read them.
#include <vector>

#include "core/error.hpp"
#include "data/token_file.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = bmojo::fuzz::scratch_path("tokens.bmtok");
  bmojo::fuzz::write_input(path, data, size);
  try {
    const bmojo::TokenFile f(path);
    int64_t sum = 0;
    for (int64_t d = 0; d < f.num_docs(); ++d)
      for (int64_t i = f.doc_begin(d); i < f.doc_end(d); ++i) sum += f.token_bytes(f[i]);
    std::vector<int32_t> out(static_cast<size_t>(std::min<int64_t>(f.size(), 64)));
    if (!out.empty())
      f.copy(f.size() - static_cast<int64_t>(out.size()), static_cast<int64_t>(out.size()), out.data());
    (void)sum;
  } catch (const bmojo::Error&) {
  }
  return 0;
}
