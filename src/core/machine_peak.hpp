// The machine's fp32 multiply-add peak, measured now: a register-only loop of independent fused multiply-adds
// on every thread, at the widest vector width this build targets; and the nominal peak derived from the CPU
// it runs on. Virtual machines' clocks drift and cores may be shared, so achieved GFLOP/s are quoted against
// both.
#pragma once
#include <string>

namespace bmojo {

// The nominal fp32 peak of this CPU for `threads` cores: multiply-adds per cycle from its features
// (core/cpu_features.hpp: 2 FMA pipes of the widest vector width, 512-bit ones split on Zen 4) x 2 FLOPs x
// the core clock, measured now by a chain of dependent integer multiplies (three cycles each on x86-64),
// since virtual machines do not report their clock. Zen 5, 2 cores at 4.4 GHz: 2 x 32 x 2 x 4.4 = 563.
struct NominalPeak {
  double gflops = 0.0;
  double ghz = 0.0;       // measured clock of one core
  int fma_per_cycle = 0;  // fp32 multiply-adds per cycle and core
  int cores = 0;
  std::string basis() const;  // "2 cores x 32 FMA/cycle x 2 x 4.40 GHz"
};
NominalPeak nominal_fp32_peak(int threads);

struct PeakMeasurement {
  double gflops = 0.0;  // best of a few short runs, all threads together
  int threads = 0;
  std::string isa;  // "avx512", "avx2" or "128-bit": the vector width the loop ran at
};

// Runs for about `seconds` in total.
PeakMeasurement measure_fp32_peak(int threads, double seconds = 0.3);

// The memory read bandwidth `threads` threads reach now, GB/s (1e9 bytes): each sums its contiguous share
// of a buffer far larger than the caches (256 MiB) with independent vector accumulators; best of a few
// passes after a first one that faults the pages in. What decode, which streams the weights once per step,
// can at best reach (`bmojo infer-bench` reports its share of it).
double measure_read_bandwidth(int threads);

}  // namespace bmojo
