// `bmojo lengthgen`: length generalisation of a model trained at length T. Documents of a token file
// with at least 8T (the largest multiple) + 1 tokens are run through streaming inference from their first
// token, and the loss of every position is recorded. For a causal model the loss at position p does not
// depend on how much text follows, so one pass at 8T gives the evaluations at T, 2T, 4T and 8T on the
// same text: the mean loss over positions [0, mT) for each multiple m, and the loss per position bucket.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bmojo {

struct LengthGenOptions {
  std::string checkpoint;
  std::string tokens;
  std::vector<int> multiples{1, 2, 4, 8};
  int train_length = 0;  // 0: the checkpoint's data.seq_len
  int bucket = 0;        // positions per bucket; 0: T / 4
  int max_docs = 16;
  int64_t block = 256;
  int threads = 0;
  std::string out;  // write the JSON result here too
  bool json = false;
};

int run_lengthgen(const LengthGenOptions& o);

}  // namespace bmojo
