#include "train/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.hpp"
#include "core/json_io.hpp"
#include "core/safetensors.hpp"
#include "data/tokenizer.hpp"

namespace bmojo {

using nlohmann::json;

namespace {

std::string rng_to_string(const Rng::State& s) {
  std::ostringstream o;
  o << s[0] << ' ' << s[1] << ' ' << s[2] << ' ' << s[3];
  return o.str();
}

// A whole decimal number, nothing before or after it (std::stoll would take "12abc" as 12).
template <class T>
T parse_number(const std::string& text, const std::string& what) {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  check(ec == std::errc() && end == text.data() + text.size() && !text.empty(),
        what + " is not a number in range: '" + text.substr(0, 40) + "'");
  return v;
}

Rng::State rng_from_string(const std::string& text, const std::string& where) {
  std::istringstream in(text);
  Rng::State s{};
  std::string word;
  for (auto& w : s) {
    check(static_cast<bool>(in >> word), where + "malformed rng state '" + text.substr(0, 80) + "'");
    w = parse_number<uint64_t>(word, where + "rng state word");
  }
  check(!(in >> word), where + "malformed rng state '" + text.substr(0, 80) + "'");
  return s;
}

SafetensorsFile parse_file(const std::string& path) {
  SafetensorsFile f = read_safetensors(path, "checkpoint");
  const std::string where = "checkpoint '" + path + "': ";
  check(f.metadata.value("format", "") == kCheckpointFormat,
        where + "not a bmojo checkpoint (its __metadata__ has no format \"" + kCheckpointFormat + "\")");
  if (!f.has_checksum)
    std::fprintf(stderr,
                 "bmojo: notice: checkpoint '%s' has no checksum (written by an older bmojo); loaded without "
                 "verifying its data\n",
                 path.c_str());
  return f;
}

CheckpointInfo info_from(const SafetensorsFile& f, const std::string& path) {
  const std::string where = "checkpoint '" + path + "': ";
  CheckpointInfo info;
  const json& m = f.metadata;
  const std::string version = m.value("format_version", "");
  check(version == std::to_string(kCheckpointVersion), where + "format version '" + version +
                                                           "' is not supported (expected " +
                                                           std::to_string(kCheckpointVersion) + ")");
  check(m.contains("config") && m["config"].is_string(), where + "metadata has no config");
  const json cfg = parse_json(m["config"].get<std::string>(), where + "config in the metadata");
  try {
    info.config = config_from_json(cfg);
    info.config.validate();
  } catch (const Error& e) {
    fail(where + "the config in its metadata is invalid: " + e.what());
  }
  info.state.step = parse_number<int64_t>(m.value("step", "0"), where + "step");
  check(info.state.step >= 0, where + "negative step " + std::to_string(info.state.step));
  info.state.data_position = parse_number<uint64_t>(m.value("data_position", "0"), where + "data_position");
  info.state.tokenizer_hash =
      parse_number<uint64_t>(m.value("tokenizer_hash", "0"), where + "tokenizer_hash");
  info.state.global_batch = parse_number<int64_t>(m.value("global_batch", "0"), where + "global_batch");
  info.state.rng = rng_from_string(m.value("rng", "0 0 0 0"), where);
  const std::string optimizer = m.value("optimizer", "none");
  check(optimizer == "adamw" || optimizer == "none",
        where + "unknown optimizer '" + optimizer.substr(0, 40) + "' in metadata");
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
                     {"global_batch", std::to_string(state.global_batch)},
                     {"optimizer", optimizer ? "adamw" : "none"}},
                    "checkpoint");
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  const SafetensorsFile f = parse_file(path);
  return info_from(f, path);
}

CheckpointInfo load_checkpoint(const std::string& path, Model& model, AdamW* optimizer) {
  const SafetensorsFile f = parse_file(path);
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
    check(!it->second.i64, where + "tensor '" + name + "' is I64; checkpoint tensors are F32");
    std::memcpy(base + spec.offset, f.data(it->second), spec.numel * 4);
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
