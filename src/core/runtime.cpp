#include "core/runtime.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace bmojo {

namespace {
constexpr const char* kOverrideVar = "OPENBLAS_CORETYPE";
constexpr const char* kRemovedVar = "BMOJO_REMOVED_OPENBLAS_CORETYPE";
// Set BMOJO_KEEP_OPENBLAS_CORETYPE=1 to deliberately run with the caller's OPENBLAS_CORETYPE.
constexpr const char* kKeepVar = "BMOJO_KEEP_OPENBLAS_CORETYPE";
}  // namespace

void ensure_native_blas_kernels(char** argv) {
  const char* forced = std::getenv(kOverrideVar);
  if (forced == nullptr || std::getenv(kKeepVar) != nullptr) return;
  setenv(kRemovedVar, forced, 1);
  unsetenv(kOverrideVar);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with the slower kernels rather than refuse to run.
  std::fprintf(stderr, "bmojo: warning: could not re-execute without OPENBLAS_CORETYPE=%s\n", forced);
}

std::string blas_environment_note() {
  const char* removed = std::getenv(kRemovedVar);
  if (removed != nullptr)
    return std::string("OPENBLAS_CORETYPE=") + removed + " ignored (restarted without it)";
  const char* forced = std::getenv(kOverrideVar);
  if (forced != nullptr)
    return std::string("OPENBLAS_CORETYPE=") + forced + " in force (" + kKeepVar + " set)";
  return "";
}

}  // namespace bmojo
