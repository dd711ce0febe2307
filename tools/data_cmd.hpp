// `bmojo data`: train a BPE tokenizer on text, tokenize text into token files, describe a token file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bmojo {

struct DataTokenizerOptions {
  std::vector<std::string> inputs;  // files (one document each) or directories of them
  std::string out;
  int vocab_size = 4096;
  int64_t max_sentences = 2000000;
  int threads = 0;
  bool verbose = false;
};

struct DataEncodeOptions {
  std::vector<std::string> inputs;
  std::string tokenizer = "byte";
  std::string out;
};

int run_data_tokenizer(const DataTokenizerOptions& o);
int run_data_encode(const DataEncodeOptions& o);
int run_data_info(const std::string& path, bool json);

// Documents of the inputs: each file is one; a directory contributes its regular files in name order.
std::vector<std::string> read_documents(const std::vector<std::string>& inputs,
                                        std::vector<std::string>* names);

}  // namespace bmojo
