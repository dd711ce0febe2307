#include "infer/state_file.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "model/bmojo_layer.hpp"

namespace bmojo {

namespace {

std::string prefix(size_t l) {
  return "layer" + std::to_string(l) + ".";
}

// Reads the named tensors of one file, each checked for presence, dtype, shape and finite values; counts
// what was used so that unexpected tensors can be refused at the end.
class Fields {
 public:
  Fields(const SafetensorsFile& f, std::string where) : f_(f), where_(std::move(where)) {}

  const SafetensorsTensor& get(const std::string& name, bool i64) {
    const auto it = f_.tensors.find(name);
    check(it != f_.tensors.end(), where_ + "tensor '" + name + "' is missing");
    check(it->second.i64 == i64, where_ + "tensor '" + name + "' is " + (it->second.i64 ? "I64" : "F32") +
                                     ", expected " + (i64 ? "I64" : "F32"));
    used_.insert(name);
    return it->second;
  }
  // The shape must be `shape`, except that a dimension given as -1 may be anything up to max_rows.
  std::vector<int64_t> shape_of(const std::string& name, const SafetensorsTensor& t,
                                std::vector<int64_t> shape, int64_t max_rows) {
    bool ok = t.shape.size() == shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i) {
      if (shape[i] < 0) {
        ok = t.shape[i] <= max_rows;
        shape[i] = t.shape[i];
      } else {
        ok = t.shape[i] == shape[i];
      }
    }
    check(ok, where_ + "tensor '" + name + "' has shape " + shape_text(t.shape) + ", this model expects " +
                  shape_text(shape) +
                  (max_rows >= 0 ? " (at most " + std::to_string(max_rows) + " rows)" : ""));
    return shape;
  }
  std::vector<float> floats(const std::string& name, const std::vector<int64_t>& shape,
                            int64_t max_rows = -1) {
    const SafetensorsTensor& t = get(name, false);
    shape_of(name, t, shape, max_rows);
    const float* p = f_.data(t);
    std::vector<float> v(p, p + t.numel());
    for (float x : v) check(std::isfinite(x), where_ + "tensor '" + name + "' holds a non-finite value");
    return v;
  }
  std::vector<int64_t> integers(const std::string& name, const std::vector<int64_t>& shape,
                                int64_t max_rows = -1) {
    const SafetensorsTensor& t = get(name, true);
    shape_of(name, t, shape, max_rows);
    return f_.i64_values(t);
  }
  bool has(const std::string& name) const { return f_.tensors.count(name) > 0; }
  void refuse_unexpected() const {
    for (const auto& [name, t] : f_.tensors)
      check(used_.count(name) > 0, where_ + "tensor '" + name + "' is not part of this model's state");
  }

 private:
  static std::string shape_text(const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + ")";
  }
  const SafetensorsFile& f_;
  std::string where_;
  std::set<std::string> used_;
};

int64_t strict_integer(const std::string& text, const std::string& what) {
  check(!text.empty() && text.size() <= 19 && text.find_first_not_of("0123456789") == std::string::npos,
        what);
  return std::stoll(text);
}

}  // namespace

void save_sequence_state(const std::string& path, const SequenceState& state, const Model& model,
                         const std::vector<int32_t>* prefix_tokens) {
  require_replaceable(path, "state file");
  const ModelConfig& cfg = model.config();
  std::vector<SafetensorsItem> items;
  // Values gathered for the file, kept until it is written (an inner vector's buffer survives the outer
  // vector's growth, so the items' pointers stay valid).
  std::vector<std::vector<int64_t>> integers;
  std::vector<std::vector<float>> gathered;
  const auto add = [&](const std::string& name, std::vector<int64_t> shape, const float* data) {
    items.push_back({name, std::move(shape), data, nullptr});
  };
  const auto add_i64 = [&](const std::string& name, std::vector<int64_t> values) {
    integers.push_back(std::move(values));
    items.push_back({name, {static_cast<int64_t>(integers.back().size())}, nullptr, integers.back().data()});
  };
  for (size_t l = 0; l < state.layers.size(); ++l) {
    const LayerState& st = state.layers[l];
    const LayerParts parts = layer_parts(st.kind, cfg);
    const std::string p = prefix(l);
    const int64_t C = cfg.d_inner(), kvd = cfg.kv_heads() * cfg.head_dim(), W = cfg.window;
    if (parts.ssm) {
      add(p + "ssm_conv", {cfg.d_conv - 1, C}, st.ssm.conv.data());
      add(p + "ssm_scan", {C, cfg.d_state}, st.ssm.ssm.data());
    }
    for (const auto& [name, rows] : {std::pair{"kv", &st.kv}, std::pair{"kvf", &st.kvf}}) {
      if (rows->width == 0) continue;
      // F32 whatever the storage (bf16 widens exactly; the metadata says to round it back).
      const int64_t from = rows->readable_first();
      gathered.push_back(rows->rows_f32(from, rows->end() - from));
      add(p + name, {rows->end() - from, rows->width}, gathered.back().data());
    }
    if (!parts.eidetic) continue;
    add(p + "y_prev", {cfg.d_model}, st.y_prev.data());
    add(p + "chunk_scores", {W}, st.chunk_scores.data());
    add(p + "chunk_kv", {W, 2 * kvd}, st.chunk_kv.data());
    add(p + "chunk_qsum", {kvd}, st.chunk_qsum.data());
    std::vector<int64_t> positions;
    std::vector<float> scores;
    for (const EideticEntry& e : st.memory.entries()) {
      positions.push_back(e.position);
      scores.push_back(e.score);
    }
    const int64_t n = static_cast<int64_t>(positions.size());
    add_i64(p + "memory_positions", std::move(positions));
    gathered.push_back(std::move(scores));
    add(p + "memory_scores", {n}, gathered.back().data());
    gathered.push_back(st.memory.rows_f32());
    add(p + "memory_kv", {n, 2 * kvd}, gathered.back().data());
    for (size_t g = 0; g < st.retrieved_positions.size(); ++g) {
      const std::string r = p + "retrieved" + std::to_string(g);
      add_i64(r + "_positions", st.retrieved_positions[g]);
      add(r + "_kv", {static_cast<int64_t>(st.retrieved_positions[g].size()), 2 * cfg.head_dim()},
          st.retrieved_kv[g].data());
    }
  }
  if (prefix_tokens != nullptr) {
    check(static_cast<int64_t>(prefix_tokens->size()) == state.position,
          "state file: the prefix tokens must be the state's " + std::to_string(state.position) + " tokens");
    add_i64("prefix_tokens", std::vector<int64_t>(prefix_tokens->begin(), prefix_tokens->end()));
  }
  std::string letters;
  for (const LayerState& st : state.layers) letters += st.kind;
  write_safetensors(path, items,
                    {{"format", kStateFormat},
                     {"format_version", std::to_string(kStateVersion)},
                     {"fingerprint", hex64(model.fingerprint())},
                     {"position", std::to_string(state.position)},
                     {"layers", letters},
                     {"kv_storage", kv_storage_name(state.storage())}},
                    "state file");
}

SequenceState load_sequence_state(const std::string& path, const Model& model,
                                  std::vector<int32_t>* prefix_tokens) {
  SafetensorsFile f;
  try {
    f = read_safetensors(path, "state file");
  } catch (const Error& e) {
    const std::string why = e.what();
    if (why.find("cannot open") != std::string::npos) throw;
    fail("state file '" + path + "' is not a bmojo inference state, or is truncated or corrupted (" + why +
         ")");
  }
  check(f.has_checksum, "state file '" + path + "': has no checksum (not written by bmojo)");
  return sequence_state_from(f, model, path, prefix_tokens);
}

SequenceState sequence_state_from(const SafetensorsFile& f, const Model& model, const std::string& path,
                                  std::vector<int32_t>* prefix_tokens) {
  const std::string where = "state file '" + path + "': ";
  const ModelConfig& cfg = model.config();
  const auto meta = [&](const char* key) {
    check(f.metadata.contains(key) && f.metadata[key].is_string(), where + "metadata has no '" + key + "'");
    return f.metadata[key].get<std::string>();
  };
  check(f.metadata.value("format", "") == kStateFormat,
        where + "not a bmojo inference state (its metadata has no format \"" + kStateFormat + "\")");
  check(meta("format_version") == std::to_string(kStateVersion),
        where + "format version " + meta("format_version") + ", this build reads " +
            std::to_string(kStateVersion));
  check(meta("fingerprint") == hex64(model.fingerprint()),
        where + "was saved by a different model (config or weights differ from the loaded checkpoint)");
  check(meta("layers") == cfg.layers,
        where + "holds layers '" + meta("layers") + "', the model has '" + cfg.layers + "'");
  // How the keys and values were stored (states saved before this key existed: f32).
  const KvStorage storage = f.metadata.contains("kv_storage")
                                ? parse_kv_storage(meta("kv_storage"), where + "kv_storage")
                                : KvStorage::f32;
  SequenceState state = empty_sequence_state(cfg, storage);
  state.position =
      strict_integer(meta("position"), where + "position '" + meta("position") + "' is not a count");
  check(state.position < kMaxPosition,
        where + "position " + std::to_string(state.position) + " is out of range");
  Fields fields(f, where);
  const int64_t C = cfg.d_inner(), kvd = cfg.kv_heads() * cfg.head_dim(), W = cfg.window;
  for (size_t l = 0; l < state.layers.size(); ++l) {
    LayerState& st = state.layers[l];
    const LayerParts parts = layer_parts(st.kind, cfg);
    const std::string p = prefix(l);
    if (parts.ssm) {
      st.ssm.conv = fields.floats(p + "ssm_conv", {cfg.d_conv - 1, C});
      st.ssm.ssm = fields.floats(p + "ssm_scan", {C, cfg.d_state});
    }
    for (const auto& [name, rows] : {std::pair{"kv", &st.kv}, std::pair{"kvf", &st.kvf}}) {
      if (rows->width == 0) continue;
      // Exactly the rows save writes: the last min(keep, position) (every position for a full-span cache),
      // ending at the state's position. Fewer would let attention read before the buffer.
      const int64_t want = rows->keep > 0 ? std::min<int64_t>(rows->keep, state.position) : state.position;
      check(rows->keep > 0 || want <= (int64_t{1} << 24), where + "a full-span cache of " +
                                                              std::to_string(want) +
                                                              " positions is beyond what a state file holds");
      rows->assign(fields.floats(p + name, {want, rows->width}), state.position - want, want);
      if (rows->bf16())
        for (uint16_t h : rows->data16)
          check(std::isfinite(bf16_to_float(h)),
                where + "layer " + std::to_string(l) + " " + name + " holds a value beyond bf16's range");
    }
    if (!parts.eidetic) continue;
    st.y_prev = fields.floats(p + "y_prev", {cfg.d_model});
    st.chunk_scores = fields.floats(p + "chunk_scores", {W});
    st.chunk_kv = fields.floats(p + "chunk_kv", {W, 2 * kvd});
    st.chunk_qsum = fields.floats(p + "chunk_qsum", {kvd});
    const std::vector<int64_t> positions =
        fields.integers(p + "memory_positions", {-1}, cfg.eidetic_capacity);
    const int64_t e = static_cast<int64_t>(positions.size());
    const std::vector<float> scores = fields.floats(p + "memory_scores", {e});
    std::vector<float> rows = fields.floats(p + "memory_kv", {e, 2 * kvd});
    // Entries come from complete chunks only: positions before the current chunk's start, ascending.
    const int64_t chunk_start = state.position / W * W;
    std::vector<EideticEntry> entries(positions.size());
    for (size_t i = 0; i < positions.size(); ++i) {
      check(positions[i] >= 0 && positions[i] < chunk_start && (i == 0 || positions[i - 1] < positions[i]),
            where + "layer " + std::to_string(l) +
                " eidetic entries are not ascending positions of completed chunks");
      entries[i] = {positions[i], scores[i]};
    }
    st.memory.set_entries(std::move(entries), std::move(rows));
    for (uint16_t h : st.memory.rows16())
      check(std::isfinite(bf16_to_float(h)),
            where + "layer " + std::to_string(l) + " memory_kv holds a value beyond bf16's range");
    const bool any_retrieved = fields.has(p + "retrieved0_positions");
    if (!any_retrieved) continue;
    st.retrieved_kv.assign(cfg.kv_heads(), {});
    st.retrieved_positions.assign(cfg.kv_heads(), {});
    for (int g = 0; g < cfg.kv_heads(); ++g) {
      const std::string r = p + "retrieved" + std::to_string(g);
      st.retrieved_positions[g] = fields.integers(r + "_positions", {-1}, kMaxRetrieve);
      for (int64_t pos : st.retrieved_positions[g])
        check(pos >= -1 && pos < state.position, where + "layer " + std::to_string(l) +
                                                     " retrieved entry at position " + std::to_string(pos) +
                                                     " is not of the past");
      st.retrieved_kv[g] = fields.floats(
          r + "_kv", {static_cast<int64_t>(st.retrieved_positions[g].size()), 2 * cfg.head_dim()});
    }
  }
  if (prefix_tokens != nullptr) {
    check(fields.has("prefix_tokens"), where + "has no prefix_tokens (the tokens the state has consumed)");
    check(state.position <= (int64_t{1} << 24), where + "a prefix of " + std::to_string(state.position) +
                                                    " tokens is beyond what a state file holds");
    const std::vector<int64_t> ids = fields.integers("prefix_tokens", {state.position});
    prefix_tokens->clear();
    for (int64_t id : ids) {
      check(id >= 0 && id < cfg.vocab_size, where + "prefix token " + std::to_string(id) +
                                                " is outside the vocabulary [0, " +
                                                std::to_string(cfg.vocab_size) + ")");
      prefix_tokens->push_back(static_cast<int32_t>(id));
    }
  }
  fields.refuse_unexpected();
  return state;
}

}  // namespace bmojo
