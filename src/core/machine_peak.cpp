#include "core/machine_peak.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/cpu_features.hpp"

namespace bmojo {

namespace {

// Independent accumulator chains: enough to cover the FMA latency (4 cycles) on two pipes.
constexpr int kChains = 12;

// One vector register's worth of lanes at the widest width this build targets, as a GCC vector type: this
// file is compiled with -ffp-contract=fast (CMakeLists.txt) so that `a * b + c` is one fused multiply-add.
#if defined(__AVX512F__)
constexpr int kWidth = 16;
constexpr const char* kIsa = "avx512";
#elif defined(__AVX2__)
constexpr int kWidth = 8;
constexpr const char* kIsa = "avx2";
#else
constexpr int kWidth = 4;
constexpr const char* kIsa = "128-bit";
#endif
using V = float __attribute__((vector_size(kWidth * sizeof(float))));

float fma_loop(int64_t iterations, float seed) {
  V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = V{} + seed * static_cast<float>(i);
  const V mul = V{} + 0.999999f, add = V{} + 1e-7f;
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * mul + add;
  }
  float sum = 0.0f;
  for (int i = 0; i < kChains; ++i)
    for (int l = 0; l < kWidth; ++l) sum += acc[i][l];
  return sum;
}

// Keeps the loops' results observable so the compiler cannot drop them.
volatile float g_sink = 0.0f;

double run_once(int threads, int64_t iterations_per_thread, int& team) {
  const auto t0 = std::chrono::steady_clock::now();
  float total = 0.0f;
  team = threads;  // a nested region may get fewer threads than asked for
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    if (omp_get_thread_num() == 0) team = omp_get_num_threads();
    total += fma_loop(iterations_per_thread, 1.0f + static_cast<float>(omp_get_thread_num()));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_sink = total;
  const double flops = 2.0 * kWidth * kChains * static_cast<double>(iterations_per_thread) * team;
  return flops / s / 1e9;
}

}  // namespace

PeakMeasurement measure_fp32_peak(int threads, double seconds) {
  threads = std::max(1, threads);
  // Calibrate: a short run gives the rate; size the timed runs to about a fifth of the budget each.
  int64_t iterations = 1 << 16;
  int team = threads;
  const double calib = run_once(threads, iterations, team);
  const double per_run = std::max(seconds / 5.0, 1e-3);
  iterations = std::max<int64_t>(
      1 << 16, static_cast<int64_t>(calib * 1e9 * per_run / (2.0 * kWidth * kChains * team)));
  double best = calib;
  for (int r = 0; r < 4; ++r) best = std::max(best, run_once(threads, iterations, team));
  return {best, team, kIsa};
}

namespace {

// Cycles of one core over `iterations` x 8 dependent 64-bit multiplies (3-cycle latency on every x86-64
// core since Core 2 and K8; the loop's own counter and branch run beside them on other ports). Not adds of
// an immediate: Intel's Golden Cove and later cores fold chains of those at rename, and the clock read
// 19.6 GHz on a Sapphire Rapids-class Xeon.
double multiply_chain_ghz(int64_t iterations) {
  uint64_t x = 3;
  const uint64_t one = 1;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i)
    asm volatile(
        "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
        "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0"
        : "+r"(x)
        : "r"(one));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_sink = static_cast<float>(x);
  return 24.0 * static_cast<double>(iterations) / s / 1e9;
}

}  // namespace

std::string NominalPeak::basis() const {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%d cores x %d FMA/cycle x 2 x %.2f GHz", cores, fma_per_cycle, ghz);
  return buf;
}

NominalPeak nominal_fp32_peak(int threads) {
  NominalPeak p;
  p.cores = std::max(1, threads);
  p.fma_per_cycle = cpu_features().fp32_fma_per_cycle();
  double best = 0.0;
  for (int r = 0; r < 5; ++r) best = std::max(best, multiply_chain_ghz(700'000));  // about 4 ms each
  p.ghz = best;
  p.gflops = p.cores * p.fma_per_cycle * 2.0 * p.ghz;
  return p;
}

double measure_read_bandwidth(int threads) {
  constexpr size_t kFloats = size_t{64} << 20;  // 256 MiB
  constexpr int kLanes = 32;                    // independent sums: the adds never wait on each other
  std::vector<float> buffer(kFloats, 1.0f);
  double best = 0.0;
  volatile float sink = 0.0f;
  for (int pass = 0; pass < 4; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      float acc[kLanes] = {};
#pragma omp for schedule(static)
      for (size_t i = 0; i < kFloats; i += kLanes)
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) acc[j] += buffer[i + j];
      for (float a : acc) total += a;
    }
    sink = total;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass > 0) best = std::max(best, static_cast<double>(kFloats * sizeof(float)) / s / 1e9);
  }
  (void)sink;
  return best;
}

}  // namespace bmojo
