#include "core/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace bmojo {

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& path, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    check(w > 0, what + ": writing '" + path + "' failed: " + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata, const std::string& what) {
  nlohmann::json header;
  uint64_t offset = 0;
  std::vector<uint64_t> bytes(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    uint64_t numel = 1;
    for (int64_t d : items[i].shape) numel *= static_cast<uint64_t>(d);
    bytes[i] = numel * 4;
    header[items[i].name] = {
        {"dtype", "F32"}, {"shape", items[i].shape}, {"data_offsets", {offset, offset + bytes[i]}}};
    offset += bytes[i];
  }
  header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  const std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  check(fd >= 0, what + ": cannot create '" + tmp + "': " + std::strerror(errno));
  try {
    write_all(fd, len, 8, tmp, what);
    write_all(fd, text.data(), text.size(), tmp, what);
    for (size_t i = 0; i < items.size(); ++i) write_all(fd, items[i].data, bytes[i], tmp, what);
    check(::fsync(fd) == 0, what + ": fsync of '" + tmp + "' failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  check(::rename(tmp.c_str(), path.c_str()) == 0,
        what + ": cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace bmojo
