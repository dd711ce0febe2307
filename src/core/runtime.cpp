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
constexpr const char* kRestartedVar = "BMOJO_RESTARTED";
constexpr const char* kSpinCount = "3000";
}  // namespace

void ensure_native_blas_kernels(char** argv) {
  if (std::getenv(kRestartedVar) != nullptr) return;
  bool restart = false;
  const char* forced = std::getenv(kOverrideVar);
  if (forced != nullptr && std::getenv(kKeepVar) == nullptr) {
    setenv(kRemovedVar, forced, 1);
    unsetenv(kOverrideVar);
    restart = true;
  }
  // OpenMP threads that finish a region spin before they sleep (libgomp: 300,000 turns by default). Beside
  // another busy process that spinning takes the core the other thread needs, and a decode step of dozens of
  // small regions ran 2-4x slower on 2 threads than on 1. A short spin keeps back-to-back regions fast when
  // the machine is ours and lets the threads sleep when it is shared (docs/performance.md). The caller's
  // own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    setenv("GOMP_SPINCOUNT", kSpinCount, 1);
    restart = true;
  }
  if (!restart) return;
  setenv(kRestartedVar, "1", 1);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with the slower settings rather than refuse to run.
  std::fprintf(stderr, "bmojo: warning: could not re-execute with the BLAS and OpenMP settings\n");
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
