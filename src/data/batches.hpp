// Where training and evaluation batches come from: the synthetic tasks (data/mqar.hpp) or token files
// (data/token_file.hpp). Text batches:
// - training: B windows of T + 1 tokens at uniformly random offsets of the train file's token stream
//   (documents concatenated), a pure function of (seed, batch index), so a resumed run sees exactly the
//   batches an uninterrupted one would;
// - evaluation: consecutive, non-overlapping windows from the start of the validation file, so every
//   evaluation scores the same tokens, each once.
#pragma once
#include <cstdint>
#include <memory>

#include "data/mqar.hpp"
#include "data/token_file.hpp"
#include "model/config.hpp"

namespace bmojo {

// B random windows (inputs t..t+T-1, targets t+1..t+T) of a token file.
Batch text_random_batch(const TokenFile& file, int T, int B, uint64_t seed, uint64_t index);
// Windows index*B .. index*B+B-1 of the file cut into consecutive windows of T predicted tokens; rows
// past the last window have every target ignored.
Batch text_contiguous_batch(const TokenFile& file, int T, int B, uint64_t index);
// How many such windows the file holds: (N - 1) / T.
int64_t text_windows(const TokenFile& file, int T);

class BatchSource {
 public:
  // For the text task: opens the token files, checks them against the tokenizer and the model's
  // vocabulary. The validation file defaults to the training file when data.valid_tokens is empty.
  explicit BatchSource(const Config& config);
  Batch train(uint64_t index) const;
  Batch eval(uint64_t index) const;
  bool text() const { return train_file_ != nullptr; }
  // Bytes of text of a target token of the evaluation data (text task only).
  int eval_token_bytes(int32_t id) const { return eval_file()->token_bytes(id); }
  const TokenFile* eval_file() const { return valid_file_ ? valid_file_.get() : train_file_.get(); }
  uint64_t tokenizer_hash() const { return tokenizer_hash_; }
  // The token files' checksums combined (0 for the synthetic tasks): ranks compare it at start.
  uint64_t data_hash() const;

 private:
  const Config& config_;
  std::unique_ptr<TokenFile> train_file_, valid_file_;
  uint64_t tokenizer_hash_ = 0;
};

}  // namespace bmojo
