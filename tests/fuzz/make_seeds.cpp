// Writes a seed corpus for every harness into DIR/<harness>/: small valid files of each format, made by
// the same code that writes them for users (so they follow every format change).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/blas.hpp"
#include "data/token_file.hpp"
#include "data/tokenizer.hpp"
#include "fuzz_util.hpp"
#include "infer/memory_store.hpp"
#include "infer/session.hpp"
#include "infer/state_file.hpp"
#include "train/checkpoint.hpp"

namespace fs = std::filesystem;
using namespace bmojo;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: bmojo_fuzz_seeds DIR\n";
    return 2;
  }
  set_num_threads(1);
  const fs::path dir = argv[1];
  for (const char* h : {"config", "checkpoint", "state", "token_file", "tokenizer", "store"})
    fs::create_directories(dir / h);

  Config c;
  c.model = fuzz::state_model_config();
  c.data.seq_len = 16;
  c.data.num_kv_pairs = 2;
  std::ofstream(dir / "config" / "small.json") << config_to_json(c).dump(1);
  std::ofstream(dir / "config" / "partial.json")
      << R"({"model": {"layers": "BB", "window": 4}, "train": {}})";

  Model model(c.model);
  model.init_weights(7);
  AdamW opt(model.layout().slab_size());
  save_checkpoint((dir / "checkpoint" / "with_optimizer.safetensors").string(), c, model, &opt,
                  TrainingState{});
  save_checkpoint((dir / "checkpoint" / "weights_only.safetensors").string(), c, model, nullptr,
                  TrainingState{});

  Session s(model);
  s.save((dir / "state" / "empty.safetensors").string());
  std::vector<int32_t> tokens;
  for (int i = 0; i < 11; ++i) tokens.push_back((i * 7) % 40);
  s.feed(tokens.data(), static_cast<int64_t>(tokens.size()), nullptr, false, 4);
  s.save((dir / "state" / "eleven_tokens.safetensors").string());
  save_sequence_state((dir / "state" / "eleven_with_tokens.safetensors").string(), s.state(), model, &tokens);
  Session half(model, KvStorage::bf16);  // keys and values kept as bf16 (metadata kv_storage)
  half.feed(tokens.data(), static_cast<int64_t>(tokens.size()), nullptr, false, 4);
  half.save((dir / "state" / "eleven_tokens_bf16.safetensors").string());

  const Tokenizer bytes = Tokenizer::load("byte");
  write_token_file((dir / "token_file" / "two_docs.bmtok").string(), bytes, {"hello world", "B'MOJO \xff"});

  {
    MemoryStore store((dir / "store" / "five.bmstore").string(), 42, 2, 4, true);
    std::vector<float> kv(16);
    for (int e = 0; e < 5; ++e) {
      for (size_t i = 0; i < kv.size(); ++i) kv[i] = static_cast<float>(e) + 0.1f * static_cast<float>(i);
      store.add(e * 3, 0.5f * static_cast<float>(e), kv.data());
    }
  }
  std::cout << "seeds written to " << dir.string() << "\n";
  return 0;
}
