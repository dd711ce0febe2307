#include "model/innovation.hpp"

#include <algorithm>
#include <cstring>

#include "core/bf16.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

Eviction parse_eviction(const std::string& name) {
  if (name == "fifo") return Eviction::kFifo;
  if (name == "lowest_score") return Eviction::kLowestScore;
  fail("config: 'model.eviction' must be \"fifo\" or \"lowest_score\", got \"" + name + "\"");
}

const char* eviction_name(Eviction e) {
  return e == Eviction::kFifo ? "fifo" : "lowest_score";
}

void EideticMemory::set_entries(std::vector<EideticEntry> entries, std::vector<float> rows) {
  check(rows.size() == entries.size() * static_cast<size_t>(width_),
        "eidetic memory: " + std::to_string(rows.size()) + " row values for " +
            std::to_string(entries.size()) + " entries of width " + std::to_string(width_));
  entries_ = std::move(entries);
  if (!bf16_) {
    rows_ = std::move(rows);
    return;
  }
  rows16_.resize(rows.size());
  round_to_bf16(rows16_.data(), rows.data(), rows.size());
}

std::vector<float> EideticMemory::rows_f32() const {
  if (!bf16_) return rows_;
  std::vector<float> out(rows16_.size());
  bf16_to_float(out.data(), rows16_.data(), out.size());
  return out;
}

void EideticMemory::promote_chunk(const float* scores, int64_t chunk_start,
                                  std::vector<EideticEntry>* evicted, const float* chunk_rows,
                                  std::vector<float>* evicted_rows) {
  const bool with_rows = width_ > 0 && chunk_rows != nullptr;
  check(width_ == 0 || chunk_rows != nullptr, "eidetic memory: a memory with rows needs the chunk's rows");
  std::vector<EideticEntry>& candidates = candidates_;
  candidates.clear();
  for (int i = 0; i < rule_.window; ++i)
    if (scores[i] >= rule_.tau) candidates.push_back({chunk_start + i, scores[i]});
  // Highest score first, earlier position on ties (a total order, so std::sort needs no temporary
  // buffer, unlike stable_sort); NaN scores never pass the threshold above.
  std::sort(candidates.begin(), candidates.end(), [](const EideticEntry& a, const EideticEntry& b) {
    return a.score > b.score || (a.score == b.score && a.position < b.position);
  });
  if (static_cast<int>(candidates.size()) > rule_.per_chunk) candidates.resize(rule_.per_chunk);
  std::sort(candidates.begin(), candidates.end(),
            [](const EideticEntry& a, const EideticEntry& b) { return a.position < b.position; });
  entries_.insert(entries_.end(), candidates.begin(), candidates.end());
  if (with_rows)
    for (const EideticEntry& e : candidates) {
      const float* r = chunk_rows + (e.position - chunk_start) * width_;
      if (bf16_) {
        rows16_.resize(rows16_.size() + width_);
        round_to_bf16(rows16_.data() + rows16_.size() - width_, r, width_);
      } else
        rows_.insert(rows_.end(), r, r + width_);
    }
  while (static_cast<int>(entries_.size()) > rule_.capacity) {
    auto victim = entries_.begin();  // fifo: the smallest position, kept first
    if (rule_.eviction == Eviction::kLowestScore)
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->score < victim->score) victim = it;  // strict: ties keep the smaller position
    if (evicted != nullptr) evicted->push_back(*victim);
    if (with_rows && bf16_) {
      const auto at = rows16_.begin() + (victim - entries_.begin()) * width_;
      if (evicted_rows != nullptr) {
        evicted_rows->resize(evicted_rows->size() + width_);
        bf16_to_float(evicted_rows->data() + evicted_rows->size() - width_, &*at, width_);
      }
      rows16_.erase(at, at + width_);
    } else if (with_rows) {
      const auto at = rows_.begin() + (victim - entries_.begin()) * width_;
      if (evicted_rows != nullptr) evicted_rows->insert(evicted_rows->end(), at, at + width_);
      rows_.erase(at, at + width_);
    }
    entries_.erase(victim);
  }
}

std::vector<int32_t> EideticMemory::positions() const {
  std::vector<int32_t> p;
  positions(p);
  return p;
}

void EideticMemory::positions(std::vector<int32_t>& out) const {
  out.clear();
  for (const EideticEntry& e : entries_) out.push_back(static_cast<int32_t>(e.position));
}

EideticPlan plan_eidetic_memory(const float* scores, int B, int T, const SelectionRule& rule) {
  EideticPlan plan;
  plan_eidetic_memory(plan, scores, B, T, rule);
  return plan;
}

void plan_eidetic_memory(EideticPlan& plan, const float* scores, int B, int T, const SelectionRule& rule) {
  const profile::Scope scope("eidetic_selection");
  check(rule.window >= 1, "eidetic memory: window must be >= 1");
  const int chunks = (T + rule.window - 1) / rule.window;
  plan.positions.resize(B);
  thread_local EideticMemory memory;
  for (int b = 0; b < B; ++b) {
    memory.reset(rule);
    auto& per_chunk = plan.positions[b];
    per_chunk.resize(chunks);
    for (int c = 0; c < chunks; ++c) {
      per_chunk[c].reserve(static_cast<size_t>(rule.capacity));  // never more entries than that
      memory.positions(per_chunk[c]);
      const int start = c * rule.window;
      if (start + rule.window <= T && rule.per_chunk > 0 && rule.capacity > 0)
        memory.promote_chunk(scores + static_cast<int64_t>(b) * T + start, start);
    }
  }
}

double innovation_forward(float* scores, float* e, const float* x, const float* y, const float* P, int B,
                          int T, int D) {
  const profile::Scope scope("innovation_forward");
  const int64_t N = static_cast<int64_t>(B) * T;
  std::memcpy(e, x, sizeof(float) * N * D);
  for (int b = 0; b < B; ++b) {
    const int64_t r = static_cast<int64_t>(b) * T;
    if (T > 1) matmul(false, false, T - 1, D, D, -1.0f, y + r * D, D, P, D, 1.0f, e + (r + 1) * D, D);
  }
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (parallel_worth(static_cast<double>(N) * D))
  for (int64_t i = 0; i < N; ++i) {
    double s = 0.0;
    for (int c = 0; c < D; ++c) s += static_cast<double>(e[i * D + c]) * e[i * D + c];
    scores[i] = static_cast<float>(s / D);
    total += s / D;
  }
  return total / static_cast<double>(N);
}

void innovation_backward(float* dP, float* dy, double lambda, const float* e, const float* y, const float* P,
                         int B, int T, int D) {
  const profile::Scope scope("innovation_backward");
  if (T < 2) return;
  // d(lambda mean s)/d xhat_t = -2 lambda e_t / (D N).
  const float alpha = static_cast<float>(-2.0 * lambda / (static_cast<double>(D) * B * T));
  for (int b = 0; b < B; ++b) {
    const int64_t r = static_cast<int64_t>(b) * T;
    matmul(true, false, D, D, T - 1, alpha, y + r * D, D, e + (r + 1) * D, D, 1.0f, dP, D);
    matmul(false, true, T - 1, D, D, alpha, e + (r + 1) * D, D, P, D, 1.0f, dy + r * D, D);
  }
}

}  // namespace bmojo
