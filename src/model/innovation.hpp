// Long-term eidetic memory chosen by an innovation test (SPEC section 4).
//
// Innovation score: the fading state before token t predicts it, xhat_t = y_{t-1} P (y_{-1} = 0), and the
// token's surprise is s_t = |sg(x_t) - xhat_t|^2 / D. The auxiliary loss lambda * mean_t s_t trains P and,
// through y, the SSM to carry a predictive state.
//
// Selection: when chunk c = [cW, (c+1)W) is complete, its k highest-scoring tokens (ties: earlier first)
// with s >= tau are promoted into the memory; then, while more than m entries are held, one is evicted
// (fifo: smallest position; lowest_score: lowest score, ties to the smaller position). Query t in chunk c
// reads the memory as it stood after chunks 0..c-1, minus the entries with p > t - W.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/attention.hpp"

namespace bmojo {

enum class Eviction { kFifo, kLowestScore };

Eviction parse_eviction(const std::string& name);  // "fifo" | "lowest_score"; throws naming the value
const char* eviction_name(Eviction e);

struct EideticEntry {
  int64_t position = 0;  // 64-bit: a streaming session can run past 2^31 tokens
  float score = 0.0f;
};

struct SelectionRule {
  int window = 1;     // W: chunk length
  int per_chunk = 0;  // k: promoted per complete chunk
  int capacity = 0;   // m: entries held
  double tau = 0.0;   // promotion threshold on the score
  Eviction eviction = Eviction::kFifo;
};

// The bounded memory of one sequence, advanced one complete chunk at a time (used by training, where the
// whole sequence is known, and by streaming inference). With a row width, each entry also owns its row
// (streaming inference: the entry's [raw key | value]), kept in the entries' order.
class EideticMemory {
 public:
  EideticMemory() = default;
  // bf16_rows: the rows are kept rounded to bf16 (an inference state with bf16 keys and values; rows()
  // is then empty and rows16() holds them).
  explicit EideticMemory(const SelectionRule& rule, int row_width = 0, bool bf16_rows = false)
      : rule_(rule), width_(row_width), bf16_(bf16_rows) {}
  // Replaces the entries (restoring a saved inference state); they must ascend by position, and rows must
  // hold one row per entry when the memory keeps rows (fp32; rounded when the memory keeps bf16 rows).
  void set_entries(std::vector<EideticEntry> entries, std::vector<float> rows = {});
  // Promotes from the W scores of the chunk starting at position chunk_start, then evicts; the evicted
  // entries (possibly some just promoted) are appended to *evicted when given. With rows, chunk_rows holds
  // the chunk's W rows (row i for position chunk_start + i) and the evicted entries' rows are appended to
  // *evicted_rows when given.
  void promote_chunk(const float* scores, int64_t chunk_start, std::vector<EideticEntry>* evicted = nullptr,
                     const float* chunk_rows = nullptr, std::vector<float>* evicted_rows = nullptr);
  // Entries held, ascending by position (training sequences: positions below 2^31).
  std::vector<int32_t> positions() const;
  // The same into `out` (its capacity reused: no allocation once it is large enough).
  void positions(std::vector<int32_t>& out) const;
  const std::vector<EideticEntry>& entries() const { return entries_; }
  int row_width() const { return width_; }
  const std::vector<float>& rows() const { return rows_; }         // (entries, row_width), fp32 rows
  const std::vector<uint16_t>& rows16() const { return rows16_; }  // the same, bf16 rows
  bool bf16_rows() const { return bf16_; }
  // The rows as fp32 (exact for either storage) and their bytes as kept.
  std::vector<float> rows_f32() const;
  size_t row_bytes() const { return rows_.size() * sizeof(float) + rows16_.size() * sizeof(uint16_t); }
  // Empties the memory and sets its rule, keeping its buffers.
  void reset(const SelectionRule& rule) {
    rule_ = rule;
    entries_.clear();
    rows_.clear();
    rows16_.clear();
    entries_.reserve(static_cast<size_t>(rule.capacity + rule.per_chunk));
    candidates_.reserve(static_cast<size_t>(rule.window));
  }

 private:
  SelectionRule rule_;
  int width_ = 0;
  std::vector<EideticEntry> entries_;  // ascending by position
  bool bf16_ = false;
  std::vector<float> rows_;               // one row per entry when width_ > 0 (fp32 storage)
  std::vector<uint16_t> rows16_;          // the same in bf16 storage
  std::vector<EideticEntry> candidates_;  // promote_chunk's scratch, kept between calls
};

// scores (B, T) -> plan[b][c]: the memory positions held before chunk c.
EideticPlan plan_eidetic_memory(const float* scores, int B, int T, const SelectionRule& rule);
// The same into an existing plan, reusing its buffers (the training step's form: no allocation once the
// plan has been sized by a first step).
void plan_eidetic_memory(EideticPlan& plan, const float* scores, int B, int T, const SelectionRule& rule);

// scores (B, T) and e (B, T, D) = x - y_prev P from x (B, T, D), y (B, T, D), P (D, D). Returns mean_t s_t.
double innovation_forward(float* scores, float* e, const float* x, const float* y, const float* P, int B,
                          int T, int D);
// Gradient of lambda * mean_t s_t: dP += ..., dy += ... (x is under stop-gradient).
void innovation_backward(float* dP, float* dy, double lambda, const float* e, const float* y, const float* P,
                         int B, int T, int D);

}  // namespace bmojo
