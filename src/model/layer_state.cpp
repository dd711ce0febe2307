#include "model/layer_state.hpp"

#include <cstring>

#include "model/bmojo_layer.hpp"

namespace bmojo {

void PositionRows::reset(int row_width, int keep_rows) {
  width = row_width;
  keep = keep_rows;
  first = 0;
  count = 0;
  data.clear();
  data.shrink_to_fit();
}

void PositionRows::append(const float* rows, int64_t ld, int64_t n) {
  const auto rows_held = [&] { return static_cast<int64_t>(data.size()) / width; };
  if (count + n > rows_held()) {
    if (keep > 0) {
      const int64_t drop = std::max<int64_t>(0, count - keep);
      if (drop > 0) {
        std::memmove(data.data(), data.data() + drop * width, sizeof(float) * (count - drop) * width);
        first += drop;
        count -= drop;
      }
      const int64_t rows_needed =
          std::max(count + n, static_cast<int64_t>(keep) + std::max<int64_t>(n, keep));
      if (rows_needed > rows_held()) data.resize(rows_needed * width);
    } else {
      data.resize(std::max(count + n, 2 * count) * width);
    }
  }
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(data.data() + (count + i) * width, rows + i * ld, sizeof(float) * width);
  count += n;
}

void LayerState::reset(char layer_kind, const ModelConfig& cfg) {
  const LayerParts parts = layer_parts(layer_kind, cfg);
  const int D = cfg.d_model, W = cfg.window, kvd = cfg.kv_heads() * cfg.head_dim();
  std::shared_ptr<LongTermStore> kept_store = std::move(store);
  const int kept_retrieve = retrieve;
  *this = LayerState{};
  kind = layer_kind;
  store = std::move(kept_store);
  retrieve = kept_retrieve;
  if (parts.ssm) ssm.reset(cfg, 1);
  if (parts.attention) kv.reset(2 * kvd, W);
  if (parts.fading) kvf.reset(2 * kvd, 2 * W);
  if (parts.eidetic) {
    y_prev.assign(D, 0.0f);
    chunk_scores.assign(W, 0.0f);
    chunk_kv.assign(static_cast<size_t>(W) * 2 * kvd, 0.0f);
    memory = EideticMemory(selection_rule_of(cfg), 2 * kvd);
    chunk_qsum.assign(kvd, 0.0f);
  }
}

size_t LayerState::bytes() const {
  const auto vec = [](const auto& v) { return v.size() * sizeof(v[0]); };
  size_t n = vec(ssm.conv) + vec(ssm.ssm) + kv.bytes() + kvf.bytes() + vec(y_prev) + vec(chunk_scores) +
             vec(chunk_kv) + memory.entries().size() * sizeof(EideticEntry) + vec(memory.rows()) +
             vec(chunk_qsum);
  for (size_t g = 0; g < retrieved_kv.size(); ++g) n += vec(retrieved_kv[g]) + vec(retrieved_positions[g]);
  return n;
}

double LayerState::decode_read_bytes() const {
  const auto vec = [](const auto& v) { return static_cast<double>(v.size() * sizeof(v[0])); };
  // Rows of `rows` at positions [lo, hi], clipped to the rows a query can read.
  const auto span_bytes = [](const PositionRows& rows, int64_t lo, int64_t hi) {
    const int64_t first = std::max(lo, rows.readable_first()), last = std::min(hi, rows.end() - 1);
    return last < first ? 0.0 : static_cast<double>(last - first + 1) * rows.width * sizeof(float);
  };
  double n = vec(ssm.conv) + vec(ssm.ssm) + vec(y_prev) + vec(chunk_qsum) + vec(memory.rows());
  // The next token's position t: its own key and value are computed by the step, not read.
  const int64_t t = kv.width > 0 ? kv.end() : kvf.end();
  if (kv.width > 0) n += span_bytes(kv, kv.keep > 0 ? t - kv.keep + 1 : 0, t - 1);
  if (kvf.width > 0) {
    const int64_t W = kvf.keep / 2;
    n += span_bytes(kvf, t - 2 * W + 1, t - W);
  }
  if (!chunk_kv.empty()) n += (vec(chunk_kv) + vec(chunk_scores)) / static_cast<double>(kv.keep);
  for (const std::vector<float>& rows : retrieved_kv) n += vec(rows);
  return n;
}

}  // namespace bmojo
