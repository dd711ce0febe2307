#include "train/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "data/tokenizer.hpp"

namespace bmojo {

using nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 64ull << 20;

struct TensorEntry {
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

struct ParsedFile {
  json metadata;
  std::map<std::string, TensorEntry> tensors;
  uint64_t data_start = 0;
  std::vector<char> bytes;
};

std::string rng_to_string(const Rng::State& s) {
  std::ostringstream o;
  o << s[0] << ' ' << s[1] << ' ' << s[2] << ' ' << s[3];
  return o.str();
}

Rng::State rng_from_string(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  Rng::State s{};
  for (auto& w : s)
    check(static_cast<bool>(in >> w), "checkpoint '" + path + "': malformed rng state '" + text + "'");
  return s;
}

ParsedFile parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "checkpoint: cannot open '" + path + "'");
  ParsedFile f;
  f.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  const std::string where = "checkpoint '" + path + "': ";
  check(f.bytes.size() >= 8, where + "file is " + std::to_string(f.bytes.size()) +
                                 " bytes, too short to be a safetensors file (truncated?)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(f.bytes[i]);
  check(header_len <= kMaxHeaderBytes && header_len <= f.bytes.size() - 8,
        where + "header length " + std::to_string(header_len) + " does not fit in a file of " +
            std::to_string(f.bytes.size()) + " bytes: not a safetensors file, or truncated");
  json header;
  try {
    header = json::parse(f.bytes.begin() + 8, f.bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const json::parse_error&) {
    fail(where + "header is not valid JSON: not a safetensors file, or corrupted");
  }
  check(header.is_object(), where + "header is not a JSON object: not a safetensors file");
  f.data_start = 8 + header_len;
  const uint64_t data_size = f.bytes.size() - f.data_start;
  check(header.contains("__metadata__") && header["__metadata__"].is_object() &&
            header["__metadata__"].value("format", "") == kCheckpointFormat,
        where + "not a bmojo checkpoint (its __metadata__ has no format \"" + kCheckpointFormat + "\")");
  f.metadata = header["__metadata__"];
  uint64_t data_end = 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& e = it.value();
    const std::string tw = where + "tensor '" + it.key() + "': ";
    check(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
          tw + "entry needs dtype, shape and data_offsets");
    check(e["dtype"] == "F32", tw + "dtype " + e["dtype"].dump() + " is not supported (F32 expected)");
    TensorEntry t;
    uint64_t numel = 1;
    check(e["shape"].is_array(), tw + "shape is not an array");
    for (const json& d : e["shape"]) {
      check(d.is_number_integer() && d.get<int64_t>() >= 0, tw + "bad shape " + e["shape"].dump());
      t.shape.push_back(d.get<int64_t>());
      numel *= static_cast<uint64_t>(d.get<int64_t>());
    }
    const json& off = e["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
          tw + "bad data_offsets " + off.dump());
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    check(t.begin <= t.end && t.end - t.begin == numel * 4,
          tw + "byte range " + off.dump() + " does not hold " + std::to_string(numel) + " floats");
    check(t.end <= data_size, tw + "data ends at byte " + std::to_string(t.end) +
                                  " but the file holds only " + std::to_string(data_size) +
                                  " data bytes: the file is truncated");
    data_end = std::max(data_end, t.end);
    f.tensors[it.key()] = t;
  }
  return f;
}

CheckpointInfo info_from(const ParsedFile& f, const std::string& path) {
  const std::string where = "checkpoint '" + path + "': ";
  CheckpointInfo info;
  const json& m = f.metadata;
  const std::string version = m.value("format_version", "");
  check(version == std::to_string(kCheckpointVersion), where + "format version '" + version +
                                                           "' is not supported (expected " +
                                                           std::to_string(kCheckpointVersion) + ")");
  check(m.contains("config") && m["config"].is_string(), where + "metadata has no config");
  json cfg;
  try {
    cfg = json::parse(m["config"].get<std::string>());
  } catch (const json::parse_error&) {
    fail(where + "its config is not valid JSON");
  }
  info.config = config_from_json(cfg);
  try {
    info.state.step = std::stoll(m.value("step", "0"));
    info.state.data_position = std::stoull(m.value("data_position", "0"));
    info.state.tokenizer_hash = std::stoull(m.value("tokenizer_hash", "0"));
  } catch (const std::exception&) {
    fail(where + "malformed step, data_position or tokenizer_hash in metadata");
  }
  info.state.rng = rng_from_string(m.value("rng", "0 0 0 0"), path);
  info.has_optimizer = m.value("optimizer", "") == "adamw";
  return info;
}

}  // namespace

void save_checkpoint(const std::string& path, const Config& config, const Model& model,
                     const AdamW* optimizer, const TrainingState& state) {
  std::vector<SafetensorsItem> items;
  for (const TensorSpec& t : model.layout().tensors())
    items.push_back({t.name, t.shape, model.params() + t.offset});
  if (optimizer != nullptr)
    for (const TensorSpec& t : model.layout().tensors()) {
      items.push_back({"optimizer.m." + t.name, t.shape, optimizer->first_moment().data() + t.offset});
      items.push_back({"optimizer.v." + t.name, t.shape, optimizer->second_moment().data() + t.offset});
    }
  write_safetensors(path, items,
                    {{"format", kCheckpointFormat},
                     {"format_version", std::to_string(kCheckpointVersion)},
                     {"config", config_to_json(config).dump()},
                     {"step", std::to_string(state.step)},
                     {"data_position", std::to_string(state.data_position)},
                     {"rng", rng_to_string(state.rng)},
                     {"tokenizer_hash", std::to_string(state.tokenizer_hash)},
                     {"optimizer", optimizer ? "adamw" : "none"}},
                    "checkpoint");
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  const ParsedFile f = parse_file(path);
  return info_from(f, path);
}

CheckpointInfo load_checkpoint(const std::string& path, Model& model, AdamW* optimizer) {
  const ParsedFile f = parse_file(path);
  CheckpointInfo info = info_from(f, path);
  const std::string where = "checkpoint '" + path + "': ";
  check(optimizer == nullptr || info.has_optimizer,
        where + "holds weights only, no optimizer state to resume from");
  auto copy_into = [&](const std::string& name, const TensorSpec& spec, float* base) {
    auto it = f.tensors.find(name);
    check(it != f.tensors.end(),
          where + "tensor '" + name + "' is missing (the config expects " + shape_string(spec.shape) + ")");
    check(it->second.shape == spec.shape, where + "tensor '" + name + "' has shape " +
                                              shape_string(it->second.shape) + " but the config expects " +
                                              shape_string(spec.shape));
    std::memcpy(base + spec.offset, f.bytes.data() + f.data_start + it->second.begin, spec.numel * 4);
  };
  size_t expected = 0;
  for (const TensorSpec& t : model.layout().tensors()) {
    copy_into(t.name, t, model.params());
    ++expected;
    if (optimizer != nullptr) {
      copy_into("optimizer.m." + t.name, t, optimizer->first_moment().data());
      copy_into("optimizer.v." + t.name, t, optimizer->second_moment().data());
    }
  }
  size_t model_tensors = 0;
  for (const auto& [name, entry] : f.tensors)
    if (name.rfind("optimizer.", 0) != 0) {
      ++model_tensors;
      check(model.layout().contains(name),
            where + "tensor '" + name + "' is not part of the configured model");
    }
  check(model_tensors == expected, where + "tensor count does not match the configured model");
  if (optimizer != nullptr) optimizer->set_steps_taken(info.state.step);
  return info;
}

std::string checkpoint_tokenizer_spec(const std::string& checkpoint_path, const CheckpointInfo& info) {
  const uint64_t want = info.state.tokenizer_hash;
  if (want == 0) return "byte";
  if (want == byte_tokenizer_hash()) return "byte";
  std::vector<std::string> candidates;
  candidates.push_back((std::filesystem::path(checkpoint_path).parent_path() / "tokenizer.model").string());
  if (info.config.data.tokenizer != "byte") candidates.push_back(info.config.data.tokenizer);
  std::string tried;
  for (const std::string& c : candidates) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(c, ec)) {
      tried += (tried.empty() ? "" : ", ") + c + " (missing)";
      continue;
    }
    if (Tokenizer::load(c).hash() == want) return c;
    tried += (tried.empty() ? "" : ", ") + c + " (a different tokenizer)";
  }
  fail("checkpoint '" + checkpoint_path + "': the tokenizer it was trained with was not found: tried " +
       tried);
}

}  // namespace bmojo
