#include "model/layer_state.hpp"

#include <cstring>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "model/bmojo_layer.hpp"

namespace bmojo {

const char* kv_storage_name(KvStorage k) {
  return k == KvStorage::bf16 ? "bf16" : "f32";
}

KvStorage parse_kv_storage(const std::string& name, const std::string& what) {
  if (name == "f32") return KvStorage::f32;
  if (name == "bf16") return KvStorage::bf16;
  fail(what + ": unknown key/value storage '" + name + "' (f32 or bf16)");
}

void PositionRows::reset(int row_width, int keep_rows, KvStorage kind) {
  width = row_width;
  keep = keep_rows;
  storage = kind;
  first = 0;
  count = 0;
  data.clear();
  data.shrink_to_fit();
  data16.clear();
  data16.shrink_to_fit();
}

namespace {

// The append of PositionRows for one storage vector: compacts to the last `keep` rows or grows, then
// writes the n rows through put(dst, src) (a copy or a rounding).
template <typename T, typename Put>
void append_rows(PositionRows& r, std::vector<T>& buf, const float* rows, int64_t ld, int64_t n, Put put) {
  const int64_t width = r.width;
  const auto rows_held = [&] { return static_cast<int64_t>(buf.size()) / width; };
  if (r.count + n > rows_held()) {
    if (r.keep > 0) {
      const int64_t drop = std::max<int64_t>(0, r.count - r.keep);
      if (drop > 0) {
        std::memmove(buf.data(), buf.data() + drop * width, sizeof(T) * (r.count - drop) * width);
        r.first += drop;
        r.count -= drop;
      }
      const int64_t rows_needed =
          std::max(r.count + n, static_cast<int64_t>(r.keep) + std::max<int64_t>(n, r.keep));
      if (rows_needed > rows_held()) buf.resize(rows_needed * width);
    } else {
      buf.resize(std::max(r.count + n, 2 * r.count) * width);
    }
  }
  for (int64_t i = 0; i < n; ++i) put(buf.data() + (r.count + i) * width, rows + i * ld, width);
  r.count += n;
}

}  // namespace

void PositionRows::append(const float* rows, int64_t ld, int64_t n) {
  if (bf16())
    append_rows(*this, data16, rows, ld, n, [](uint16_t* dst, const float* src, int64_t w) {
      round_to_bf16(dst, src, static_cast<size_t>(w));
    });
  else
    append_rows(*this, data, rows, ld, n,
                [](float* dst, const float* src, int64_t w) { std::memcpy(dst, src, sizeof(float) * w); });
}

std::vector<float> PositionRows::rows_f32(int64_t position, int64_t n) const {
  check(position >= first && position + n <= end() && n >= 0, "PositionRows: rows outside the buffer");
  if (!bf16()) return std::vector<float>(row(position), row(position) + n * width);
  std::vector<float> out(static_cast<size_t>(n) * width);
  bf16_to_float(out.data(), row16(position), out.size());
  return out;
}

void PositionRows::assign(std::vector<float> rows, int64_t first_position, int64_t n) {
  check(static_cast<int64_t>(rows.size()) == n * width, "PositionRows: rows of the wrong size");
  first = first_position;
  count = n;
  if (!bf16()) {
    data = std::move(rows);
    return;
  }
  data16.resize(rows.size());
  round_to_bf16(data16.data(), rows.data(), rows.size());
}

void LayerState::reset(char layer_kind, const ModelConfig& cfg, KvStorage storage) {
  const LayerParts parts = layer_parts(layer_kind, cfg);
  const int D = cfg.d_model, W = cfg.window, kvd = cfg.kv_heads() * cfg.head_dim();
  std::shared_ptr<LongTermStore> kept_store = std::move(store);
  const int kept_retrieve = retrieve;
  *this = LayerState{};
  kind = layer_kind;
  store = std::move(kept_store);
  retrieve = kept_retrieve;
  if (parts.ssm) ssm.reset(cfg, 1);
  if (parts.attention) kv.reset(2 * kvd, W, storage);
  if (parts.fading) kvf.reset(2 * kvd, 2 * W, storage);
  if (parts.eidetic) {
    y_prev.assign(D, 0.0f);
    chunk_scores.assign(W, 0.0f);
    chunk_kv.assign(static_cast<size_t>(W) * 2 * kvd, 0.0f);
    memory = EideticMemory(selection_rule_of(cfg), 2 * kvd, storage == KvStorage::bf16);
    chunk_qsum.assign(kvd, 0.0f);
  }
}

size_t LayerState::bytes() const {
  const auto vec = [](const auto& v) { return v.size() * sizeof(v[0]); };
  size_t n = vec(ssm.conv) + vec(ssm.ssm) + kv.bytes() + kvf.bytes() + vec(y_prev) + vec(chunk_scores) +
             vec(chunk_kv) + memory.entries().size() * sizeof(EideticEntry) + memory.row_bytes() +
             vec(chunk_qsum);
  for (size_t g = 0; g < retrieved_kv.size(); ++g) n += vec(retrieved_kv[g]) + vec(retrieved_positions[g]);
  return n;
}

double LayerState::decode_read_bytes() const {
  const auto vec = [](const auto& v) { return static_cast<double>(v.size() * sizeof(v[0])); };
  // Rows of `rows` at positions [lo, hi], clipped to the rows a query can read.
  const auto span_bytes = [](const PositionRows& rows, int64_t lo, int64_t hi) {
    const int64_t first = std::max(lo, rows.readable_first()), last = std::min(hi, rows.end() - 1);
    return last < first ? 0.0 : static_cast<double>(last - first + 1) * rows.width * rows.element_bytes();
  };
  double n =
      vec(ssm.conv) + vec(ssm.ssm) + vec(y_prev) + vec(chunk_qsum) + static_cast<double>(memory.row_bytes());
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
