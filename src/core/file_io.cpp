#include "core/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.hpp"

namespace bmojo {

namespace {

uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

constexpr uint64_t kMul1 = 0x9E3779B185EBCA87ULL, kMul2 = 0xC2B2AE3D27D4EB4FULL;

uint64_t mix(uint64_t lane, uint64_t word) {
  return rotl(lane + word * kMul2, 31) * kMul1;
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

uint64_t fast_hash64(const void* data, size_t bytes, uint64_t hash) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t lane[4] = {hash + kMul1 + kMul2, hash + kMul2, hash, hash - kMul1};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32)
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      lane[l] = mix(lane[l], w);
    }
  uint64_t h = rotl(lane[0], 1) + rotl(lane[1], 7) + rotl(lane[2], 12) + rotl(lane[3], 18);
  h = fnv1a64(p + i, bytes - i, h ^ static_cast<uint64_t>(bytes));
  h ^= h >> 33;
  h *= kMul2;
  h ^= h >> 29;
  return h;
}

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  check(::stat(path.c_str(), &st) == 0, what + ": cannot open '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    fail(what + ": '" + path + "' is " + kind_of(st.st_mode) + ", not a regular file");
}

void require_replaceable(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  if (!S_ISREG(st.st_mode))
    fail(what + ": '" + path + "' exists and is " + kind_of(st.st_mode) +
         ", not a regular file: refusing to replace it");
}

AtomicFile::AtomicFile(const std::string& path, const std::string& what)
    : path_(path), tmp_(path + ".tmp"), what_(what) {
  require_replaceable(path, what);
  const std::filesystem::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check(fd_ >= 0, what + ": cannot create '" + tmp_ + "': " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void write_fully(int fd, const void* data, size_t bytes, const std::string& what, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(what + ": writing '" + path + "' failed: " + std::strerror(n < 0 ? errno : ENOSPC));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  write_fully(fd_, data, bytes, what_, tmp_);
}

void AtomicFile::commit() {
  check(::fsync(fd_) == 0, what_ + ": cannot flush '" + tmp_ + "': " + std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp_.c_str());
    fail(what_ + ": cannot flush '" + tmp_ + "': " + why);
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp_.c_str());
    fail(what_ + ": cannot rename '" + tmp_ + "' to '" + path_ + "': " + why);
  }
  const std::filesystem::path target(path_);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what) {
  AtomicFile f(path, what);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

void append_to_file(const std::string& path, std::string_view text, const std::string& what) {
  require_replaceable(path, what);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  check(fd >= 0, what + ": cannot open '" + path + "': " + std::strerror(errno));
  try {
    write_fully(fd, text.data(), text.size(), what, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  check(::close(fd) == 0, what + ": writing '" + path + "' failed: " + std::strerror(errno));
}

std::string read_file(const std::string& path, const std::string& what) {
  require_regular_file(path, what);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, what + ": cannot open '" + path + "': " + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      fail(what + ": cannot read '" + path + "': " + why);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace bmojo
