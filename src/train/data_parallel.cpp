#include "train/data_parallel.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/error.hpp"

#ifdef BMOJO_HAVE_MPI
#include <mpi.h>
#endif

namespace bmojo {

namespace {

bool started_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

double g_allreduce_seconds = 0.0;
bool g_initialised = false;
std::atomic<double> g_collective_timeout{300.0};

}  // namespace

void set_collective_timeout(double seconds) {
  g_collective_timeout = seconds;
}

double allreduce_seconds() {
  return g_allreduce_seconds;
}

#ifdef BMOJO_HAVE_MPI

namespace {

int g_rank = 0;
// When the collective now running began (steady clock, ns; 0: none) and what it is.
std::atomic<int64_t> g_waiting_since{0};
std::atomic<const char*> g_waiting_in{""};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Marks a collective for the watchdog while it runs.
class Waiting {
 public:
  explicit Waiting(const char* what) {
    g_waiting_in = what;
    g_waiting_since = now_ns();
  }
  ~Waiting() { g_waiting_since = 0; }
};

// Checks twice a second whether this rank has waited too long in a collective; ends the process if so.
void start_watchdog() {
  std::thread([] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const int64_t since = g_waiting_since;
      const double limit = g_collective_timeout;
      if (since == 0 || limit <= 0.0) continue;
      const double waited = static_cast<double>(now_ns() - since) * 1e-9;
      if (waited < limit) continue;
      std::fprintf(stderr,
                   "bmojo: error: data parallel: rank %d has waited %.0f s in the %s for the other ranks "
                   "(--collective-timeout %.0f): one of them is hung or gone; ending the job\n",
                   g_rank, waited, g_waiting_in.load(), limit);
      std::fflush(stderr);
      ::_exit(1);  // mpirun sees a rank end without finalizing and takes the others down
    }
  }).detach();
}

}  // namespace

bool mpi_built_in() {
  return true;
}

World init_world() {
  World w;
  if (!started_by_mpirun()) return w;
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    g_initialised = true;
  }
  // Errors come back as codes (checked below) instead of killing the process silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  g_rank = w.rank;
  if (w.size > 1) start_watchdog();
  return w;
}

void finalize_world() {
  if (g_initialised) MPI_Finalize();
  g_initialised = false;
}

void abort_if_distributed(int code) {
  if (g_initialised) MPI_Abort(MPI_COMM_WORLD, code);
}

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail(std::string("data parallel: ") + what + " failed: " + std::string(text, len));
}

}  // namespace

void allreduce_mean(float* data, size_t n) {
  if (!g_initialised) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  const Waiting waiting("gradient all-reduce");
  // Buckets of 4M floats (16 MiB): counts stay far inside int, and memory traffic stays bounded.
  constexpr size_t kBucket = size_t{1} << 22;
  for (size_t at = 0; at < n; at += kBucket) {
    const int count = static_cast<int>(std::min(kBucket, n - at));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
              "gradient all-reduce");
  }
  const float inv = 1.0f / static_cast<float>(size);
  for (size_t i = 0; i < n; ++i) data[i] *= inv;
  g_allreduce_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double allreduce_mean(double v) {
  if (!g_initialised) return v;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  double sum = 0.0;
  const Waiting waiting("all-reduce of the losses");
  check_mpi(MPI_Allreduce(&v, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "all-reduce");
  return sum / size;
}

void check_same_on_every_rank(uint64_t value, const std::string& what) {
  if (!g_initialised) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<unsigned long long> all(size);
  unsigned long long mine = value;
  const Waiting waiting("comparison of the ranks");
  check_mpi(
      MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD),
      "start-up check");
  for (int r = 1; r < size; ++r)
    check(all[r] == all[0], "data parallel: rank " + std::to_string(r) + " has another " + what +
                                " than rank 0; every rank must run the same " + what);
}

#else

bool mpi_built_in() {
  return false;
}

World init_world() {
  check(
      !started_by_mpirun(),
      "data parallel: this bmojo was built without MPI (install libopenmpi-dev and rebuild) but was started "
      "by mpirun");
  return World{};
}

void finalize_world() {}

void abort_if_distributed(int) {}

void allreduce_mean(float*, size_t) {}

double allreduce_mean(double v) {
  return v;
}

void check_same_on_every_rank(uint64_t, const std::string&) {}

#endif

}  // namespace bmojo
