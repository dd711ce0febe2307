#include "data_cmd.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "data/token_file.hpp"
#include "data/tokenizer.hpp"

namespace bmojo {

namespace fs = std::filesystem;

std::vector<std::string> read_documents(const std::vector<std::string>& inputs,
                                        std::vector<std::string>* names) {
  check(!inputs.empty(), "no --input given");
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> inside;
      for (const auto& e : fs::directory_iterator(in))
        if (e.is_regular_file()) inside.push_back(e.path().string());
      std::sort(inside.begin(), inside.end());
      check(!inside.empty(), "input directory " + in + " holds no files");
      files.insert(files.end(), inside.begin(), inside.end());
    } else {
      check(fs::is_regular_file(in, ec), "input " + in + " is neither a file nor a directory");
      files.push_back(in);
    }
  }
  std::vector<std::string> docs;
  docs.reserve(files.size());
  for (const std::string& f : files) docs.push_back(read_file(f));
  if (names) *names = files;
  return docs;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

size_t total_bytes(const std::vector<std::string>& docs) {
  size_t n = 0;
  for (const auto& d : docs) n += d.size();
  return n;
}

}  // namespace

int run_data_tokenizer(const DataTokenizerOptions& o) {
  check(!o.out.empty(), "--out is required");
  const auto t0 = Clock::now();
  const std::vector<std::string> docs = read_documents(o.inputs, nullptr);
  std::fprintf(stderr, "[data] training BPE (vocab %d) on %zu documents, %zu bytes ...\n", o.vocab_size,
               docs.size(), total_bytes(docs));
  SentencePieceTrainOptions so;
  so.vocab_size = o.vocab_size;
  so.max_sentences = o.max_sentences;
  so.threads = o.threads > 0 ? o.threads : num_cores();
  so.verbose = o.verbose;
  const std::string model = train_sentencepiece(docs, so);
  const Tokenizer t = Tokenizer::from_sentencepiece(model, o.out);
  // Compression on the training text, a quick sanity figure.
  size_t tokens = 0;
  for (const auto& d : docs) tokens += t.encode(d).size();
  write_file_atomic(o.out, model);
  std::printf("tokenizer %s | vocab %d | %.3f bytes/token on its training text | hash %016llx | %.1f s\n",
              o.out.c_str(), t.vocab_size(),
              static_cast<double>(total_bytes(docs)) / std::max<size_t>(tokens, 1),
              static_cast<unsigned long long>(t.hash()), seconds_since(t0));
  return 0;
}

int run_data_encode(const DataEncodeOptions& o) {
  check(!o.out.empty(), "--out is required");
  const auto t0 = Clock::now();
  const Tokenizer t = Tokenizer::load(o.tokenizer);
  const std::vector<std::string> docs = read_documents(o.inputs, nullptr);
  const TokenFileHeader h = write_token_file(o.out, t, docs);
  std::printf(
      "wrote %s | %llu documents | %llu bytes -> %llu tokens (%.3f bytes/token) | %s tokenizer, vocab "
      "%u | %.1f s\n",
      o.out.c_str(), static_cast<unsigned long long>(h.num_docs),
      static_cast<unsigned long long>(h.num_bytes), static_cast<unsigned long long>(h.num_tokens),
      h.num_tokens ? static_cast<double>(h.num_bytes) / h.num_tokens : 0.0, t.kind_name().c_str(),
      h.vocab_size, seconds_since(t0));
  return 0;
}

int run_data_info(const std::string& path, bool json) {
  const TokenFile f(path);
  const TokenFileHeader& h = f.header();
  int64_t longest = 0;
  for (int64_t d = 0; d < f.num_docs(); ++d) longest = std::max(longest, f.doc_end(d) - f.doc_begin(d));
  if (json) {
    std::cout << nlohmann::json{{"path", path},
                                {"version", h.version},
                                {"token_width", h.token_width},
                                {"vocab_size", h.vocab_size},
                                {"tokenizer", h.tokenizer_kind == 0 ? "byte" : "sentencepiece"},
                                {"tokenizer_hash", h.tokenizer_hash},
                                {"tokens", h.num_tokens},
                                {"documents", h.num_docs},
                                {"bytes", h.num_bytes},
                                {"longest_document", longest}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::printf("token file  %s (format version %u, %u-byte tokens)\n", path.c_str(), h.version, h.token_width);
  std::printf("tokenizer   %s, vocab %u, hash %016llx\n", h.tokenizer_kind == 0 ? "byte" : "sentencepiece",
              h.vocab_size, static_cast<unsigned long long>(h.tokenizer_hash));
  std::printf(
      "contents    %llu tokens in %llu documents (longest %lld), %llu bytes of text, %.3f bytes/token\n",
      static_cast<unsigned long long>(h.num_tokens), static_cast<unsigned long long>(h.num_docs),
      static_cast<long long>(longest), static_cast<unsigned long long>(h.num_bytes),
      h.num_tokens ? static_cast<double>(h.num_bytes) / h.num_tokens : 0.0);
  return 0;
}

std::vector<Command> data_commands(CLI::App& app) {
  struct State {
    DataTokenizerOptions dt;
    DataEncodeOptions de;
    std::string data_info_path;
    bool data_info_json = false;
  };
  auto s = std::make_shared<State>();
  auto* data = app.add_subcommand("data", "Prepare text: train a BPE tokenizer, tokenize into token files");
  data->require_subcommand(1);
  auto* data_tok = data->add_subcommand("tokenizer", "Train a SentencePiece BPE tokenizer on text files");
  data_tok->add_option("-i,--input", s->dt.inputs, "Text files (one document each) or directories of them")
      ->required();
  data_tok->add_option("-o,--out", s->dt.out, "Tokenizer model file to write")->required();
  add_integer(data_tok, "--vocab", s->dt.vocab_size, "Vocabulary size (default 4096)", 260, 1 << 20);
  add_integer(data_tok, "--max-sentences", s->dt.max_sentences,
              "Sentences sampled for training (default 2000000)", decltype(s->dt.max_sentences){1},
              std::numeric_limits<decltype(s->dt.max_sentences)>::max());
  add_integer(data_tok, "--threads", s->dt.threads, "Threads (default: all cores)", 1, kMaxThreads);
  data_tok->add_flag("--verbose", s->dt.verbose, "Show SentencePiece's log");
  auto* data_enc = data->add_subcommand("encode", "Tokenize text files into a token file for training");
  data_enc->add_option("-i,--input", s->de.inputs, "Text files (one document each) or directories of them")
      ->required();
  data_enc->add_option("-t,--tokenizer", s->de.tokenizer,
                       "\"byte\" or a tokenizer model file (default byte)");
  data_enc->add_option("-o,--out", s->de.out, "Token file to write")->required();
  auto* data_info = data->add_subcommand("info", "Describe a token file");
  data_info->add_option("file", s->data_info_path, "Token file")->required()->check(CLI::ExistingFile);
  data_info->add_flag("--json", s->data_info_json, "One JSON line");
  return {{data_tok, [s] { return run_data_tokenizer(s->dt); }},
          {data_enc, [s] { return run_data_encode(s->de); }},
          {data_info, [s] { return run_data_info(s->data_info_path, s->data_info_json); }}};
}

}  // namespace bmojo
