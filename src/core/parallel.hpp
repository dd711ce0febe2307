// Small OpenMP helpers. Reductions go through per-thread partial buffers summed in thread order, so a
// run is bit-reproducible for a given thread count.
#pragma once
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <vector>

namespace bmojo {

// Below this much work (elements touched, or multiply-adds) a loop stays on the calling thread. Waking a
// team costs microseconds, and on a machine shared with another busy process a region waits at its barrier
// for whichever thread was descheduled: a scheduler timeslice, milliseconds. A decode step is dozens of
// loops over one token; without this it ran many times slower on two threads than on one beside a busy
// process (docs/performance.md, "Threads on a shared machine").
inline constexpr double kParallelMinWork = 1 << 18;
inline bool parallel_worth(double work) {
  return work >= kParallelMinWork;
}

// An exception leaving an OpenMP region ends the program (std::terminate). Work inside a region that can
// throw (an allocation, a check) runs under guard(): the first exception is kept, later guarded work is
// skipped, every thread still reaches the region's barriers, and rethrow() after the region raises it.
class ParallelErrors {
 public:
  template <class F>
  void guard(F&& work) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      work();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  void rethrow() {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr first_;
};

// [begin, end) of a static split of n items into parts.
inline void split_range(int64_t n, int part, int parts, int64_t& begin, int64_t& end) {
  begin = n * part / parts;
  end = n * (part + 1) / parts;
}

// out (width) += sum over rows [0, n) of what accumulate(partial, begin, end) adds into partial.
template <class Accumulate>
void reduce_rows(float* out, int width, int64_t n, Accumulate&& accumulate) {
  const int threads = omp_get_max_threads();
  static thread_local std::vector<float> partials;
  partials.assign(static_cast<size_t>(threads) * width, 0.0f);
  float* base = partials.data();
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    int64_t begin, end;
    split_range(n, tid, nt, begin, end);
    accumulate(base + static_cast<size_t>(tid) * width, begin, end);
  }
  for (int t = 0; t < threads; ++t) {
    const float* p = base + static_cast<size_t>(t) * width;
    for (int i = 0; i < width; ++i) out[i] += p[i];
  }
}

}  // namespace bmojo
