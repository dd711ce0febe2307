#include "core/safetensors.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/json_io.hpp"

namespace bmojo {

namespace {

constexpr uint64_t kMaxHeaderBytes = 64ull << 20;

uint64_t header_hash(nlohmann::json header) {
  if (header.contains("__metadata__") && header["__metadata__"].is_object())
    header["__metadata__"].erase(kChecksumKey);
  const std::string canonical = header.dump();
  return fast_hash64(canonical.data(), canonical.size());
}

}  // namespace

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata, const std::string& what) {
  nlohmann::json header;
  uint64_t offset = 0;
  std::vector<uint64_t> bytes(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    uint64_t numel = 1;
    for (int64_t d : items[i].shape) numel *= static_cast<uint64_t>(d);
    const bool i64 = items[i].i64 != nullptr;
    bytes[i] = numel * (i64 ? 8 : 4);
    header[items[i].name] = {{"dtype", i64 ? "I64" : "F32"},
                             {"shape", items[i].shape},
                             {"data_offsets", {offset, offset + bytes[i]}}};
    offset += bytes[i];
  }
  header["__metadata__"] = metadata;
  // Items are laid out in order, so chaining over them is chaining over the data section in file order.
  uint64_t sum = header_hash(header);
  const auto bytes_of = [&](size_t i) -> const void* {
    return items[i].i64 != nullptr ? static_cast<const void*>(items[i].i64) : items[i].data;
  };
  for (size_t i = 0; i < items.size(); ++i) sum = fast_hash64(bytes_of(i), bytes[i], sum);
  header["__metadata__"][kChecksumKey] = hex64(sum);
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  AtomicFile f(path, what);
  f.write(len, 8);
  f.write(text.data(), text.size());
  for (size_t i = 0; i < items.size(); ++i) f.write(bytes_of(i), bytes[i]);
  f.commit();
}

std::vector<int64_t> SafetensorsFile::i64_values(const SafetensorsTensor& t) const {
  std::vector<int64_t> v(t.i64 ? t.numel() : 0);
  if (!v.empty()) std::memcpy(v.data(), bytes.data() + data_start + t.begin, v.size() * 8);
  return v;
}

SafetensorsFile read_safetensors(const std::string& path, const std::string& what) {
  SafetensorsFile f;
  f.bytes = read_file(path, what);
  const std::string where = what + " '" + path + "': ";
  check(f.bytes.size() >= 8, where + "file is " + std::to_string(f.bytes.size()) +
                                 " bytes, too short to be a safetensors file (truncated?)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(f.bytes[i]);
  check(header_len <= kMaxHeaderBytes && header_len <= f.bytes.size() - 8,
        where + "header length " + std::to_string(header_len) + " does not fit in a file of " +
            std::to_string(f.bytes.size()) + " bytes: not a safetensors file, or truncated");
  const nlohmann::json header =
      parse_json(std::string_view(f.bytes).substr(8, header_len), where + "header (not a safetensors file?)");
  check(header.is_object(), where + "header is not a JSON object: not a safetensors file");
  f.data_start = 8 + header_len;
  const uint64_t data_size = f.bytes.size() - f.data_start;
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      check(it.value().is_object(), where + "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        check(m.value().is_string(), where + "__metadata__ value '" + m.key() + "' is not a string");
      f.metadata = it.value();
      continue;
    }
    const nlohmann::json& e = it.value();
    const std::string tw = where + "tensor '" + it.key() + "': ";
    check(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
          tw + "entry needs dtype, shape and data_offsets");
    check(e["dtype"] == "F32" || e["dtype"] == "I64",
          tw + "dtype " + json_brief(e["dtype"]) + " is not supported (F32 or I64 expected)");
    SafetensorsTensor t;
    t.i64 = e["dtype"] == "I64";
    const uint64_t element = t.i64 ? 8 : 4;
    check(e["shape"].is_array() && e["shape"].size() <= 8, tw + "shape is not an array of at most 8 sizes");
    uint64_t numel = 1;
    for (const nlohmann::json& d : e["shape"]) {
      check(d.is_number_unsigned() && d.get<uint64_t>() <= data_size,
            tw + "bad shape " + json_brief(e["shape"]));
      const uint64_t n = d.get<uint64_t>();
      check(n == 0 || numel <= data_size / n,
            tw + "shape " + json_brief(e["shape"]) + " is larger than the file");
      numel *= n;
      t.shape.push_back(static_cast<int64_t>(n));
    }
    const nlohmann::json& off = e["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
          tw + "bad data_offsets " + json_brief(off));
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    check(t.begin <= t.end && t.end - t.begin == numel * element,
          tw + "byte range " + json_brief(off) + " does not hold " + std::to_string(numel) +
              (t.i64 ? " 64-bit integers" : " floats"));
    check(t.end <= data_size, tw + "data ends at byte " + std::to_string(t.end) +
                                  " but the file holds only " + std::to_string(data_size) +
                                  " data bytes: the file is truncated");
    order.emplace_back(t.begin, it.key());
    f.tensors[it.key()] = t;
  }
  // The byte ranges must tile the data section: sorted by start, each begins where the previous ended.
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    const SafetensorsTensor &ta = f.tensors[a.second], &tb = f.tensors[b.second];
    return ta.begin != tb.begin ? ta.begin < tb.begin : ta.end < tb.end;
  });
  uint64_t at = 0;
  for (const auto& [begin, name] : order) {
    const SafetensorsTensor& t = f.tensors[name];
    check(t.begin == at, where + "tensor '" + name + "' starts at byte " + std::to_string(t.begin) +
                             (t.begin < at ? ", inside the previous tensor (overlapping offsets)"
                                           : ", leaving a hole after the previous tensor (shifted offsets)"));
    at = t.end;
  }
  check(at == data_size, where + "the tensors end at data byte " + std::to_string(at) + " but the file has " +
                             std::to_string(data_size) + " (trailing bytes or truncated)");
  if (f.metadata.is_object() && f.metadata.contains(kChecksumKey)) {
    f.has_checksum = true;
    uint64_t sum = header_hash(header);
    for (const auto& [begin, name] : order) {
      const SafetensorsTensor& t = f.tensors[name];
      sum = fast_hash64(f.bytes.data() + f.data_start + t.begin, t.end - t.begin, sum);
    }
    check(f.metadata[kChecksumKey].get<std::string>() == hex64(sum),
          where + "checksum mismatch: the file is corrupted or was edited (header or tensor data changed)");
  }
  if (!f.metadata.is_object()) f.metadata = nlohmann::json::object();
  return f;
}

}  // namespace bmojo
