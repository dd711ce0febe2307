// Memory store files (the long-term memory in storage): header and record stream as reopened by a later
// run, then a retrieval over whatever was kept. The seed corpus holds stores of this shape (fingerprint 42,
// 2 KV heads of 4 dims).
#include <vector>

#include "core/error.hpp"
#include "fuzz_util.hpp"
#include "infer/memory_store.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = bmojo::fuzz::scratch_path("layer0.bmstore");
  bmojo::fuzz::write_input(path, data, size);
  try {
    std::string notice;
    bmojo::MemoryStore store(path, 42, 2, 4, true, &notice);
    const std::vector<float> queries(8, 0.5f);
    (void)store.retrieve(queries.data(), 3);
    const std::vector<float> kv(16, 1.0f);
    store.add(7, 0.5f, kv.data());
  } catch (const bmojo::Error&) {
  }
  return 0;
}
