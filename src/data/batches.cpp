#include "data/batches.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/rng.hpp"
#include "model/model.hpp"

namespace bmojo {

namespace {

// A (B, T) batch to fill from a file that must hold at least one window of T + 1 tokens.
Batch text_batch_for(const TokenFile& file, int T, int B) {
  check(file.size() >= T + 1, "token file " + file.path() + " has " + std::to_string(file.size()) +
                                  " tokens, fewer than seq_len + 1 = " + std::to_string(T + 1));
  Batch b;
  b.B = B;
  b.T = T;
  b.inputs.resize(static_cast<size_t>(B) * T);
  b.targets.resize(static_cast<size_t>(B) * T);
  return b;
}

}  // namespace

Batch text_random_batch(const TokenFile& file, int T, int B, uint64_t seed, uint64_t index) {
  Batch b = text_batch_for(file, T, B);
  const uint64_t starts = static_cast<uint64_t>(file.size() - T);  // offsets 0 .. N-T-1
  for (int s = 0; s < B; ++s) {
    Rng rng(mix_seed(seed, 11, index * static_cast<uint64_t>(B) + s));
    const auto start = static_cast<int64_t>(rng.next_u64() % starts);
    file.copy(start, T, b.inputs.data() + static_cast<size_t>(s) * T);
    file.copy(start + 1, T, b.targets.data() + static_cast<size_t>(s) * T);
  }
  return b;
}

int64_t text_windows(const TokenFile& file, int T) {
  return file.size() > 0 ? (file.size() - 1) / T : 0;
}

Batch text_contiguous_batch(const TokenFile& file, int T, int B, uint64_t index) {
  Batch b = text_batch_for(file, T, B);
  const int64_t windows = text_windows(file, T);
  for (int s = 0; s < B; ++s) {
    const uint64_t w = index * static_cast<uint64_t>(B) + s;
    int32_t* in = b.inputs.data() + static_cast<size_t>(s) * T;
    int32_t* tg = b.targets.data() + static_cast<size_t>(s) * T;
    if (w < static_cast<uint64_t>(windows)) {
      file.copy(static_cast<int64_t>(w) * T, T, in);
      file.copy(static_cast<int64_t>(w) * T + 1, T, tg);
    } else {  // past the end: a row that scores nothing
      std::fill(in, in + T, 0);
      std::fill(tg, tg + T, kIgnoreLabel);
    }
  }
  return b;
}

BatchSource::BatchSource(const Config& config) : config_(config) {
  if (config.data.task != "text") return;
  const Tokenizer tokenizer = Tokenizer::load(config.data.tokenizer);
  tokenizer_hash_ = tokenizer.hash();
  train_file_ = std::make_unique<TokenFile>(config.data.train_tokens);
  check_token_file_tokenizer(*train_file_, tokenizer);
  check_token_file_vocab(*train_file_, config.model.vocab_size);
  if (!config.data.valid_tokens.empty()) {
    valid_file_ = std::make_unique<TokenFile>(config.data.valid_tokens);
    check_token_file_tokenizer(*valid_file_, tokenizer);
    check_token_file_vocab(*valid_file_, config.model.vocab_size);
  }
}

Batch BatchSource::train(uint64_t index) const {
  const TrainConfig& t = config_.train;
  if (train_file_) return text_random_batch(*train_file_, config_.data.seq_len, t.batch_size, t.seed, index);
  return make_batch(config_.data, config_.model.vocab_size, t.batch_size, t.seed, Split::kTrain, index);
}

Batch BatchSource::eval(uint64_t index) const {
  const TrainConfig& t = config_.train;
  if (train_file_) return text_contiguous_batch(*eval_file(), config_.data.seq_len, t.batch_size, index);
  return make_batch(config_.data, config_.model.vocab_size, t.batch_size, t.seed, Split::kEval, index);
}

uint64_t BatchSource::data_hash() const {
  uint64_t h = kFnvOffset;
  for (const TokenFile* f : {train_file_.get(), valid_file_.get()}) {
    const uint64_t sum = f ? f->header().checksum : 0, n = f ? f->header().num_tokens : 0;
    h = fnv1a64(&sum, sizeof sum, h);
    h = fnv1a64(&n, sizeof n, h);
  }
  return text() ? h : 0;
}

}  // namespace bmojo
