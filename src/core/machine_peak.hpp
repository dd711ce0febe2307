// The machine's fp32 multiply-add peak, measured now: a register-only loop of independent fused multiply-adds
// on every thread, at the widest vector width this build targets. This virtual machine's clock drifts (the
// same loop has measured 434 GFLOP/s on 2 cores against a nominal 560), so achieved GFLOP/s are quoted
// against both.
#pragma once
#include <string>

namespace bmojo {

// The nominal fp32 peak of the development machine (2 cores of AMD Zen 5, 2 x 512-bit FMA per cycle).
inline constexpr double kNominalPeakGflops = 560.0;

struct PeakMeasurement {
  double gflops = 0.0;  // best of a few short runs, all threads together
  int threads = 0;
  std::string isa;  // "avx512", "avx2" or "128-bit": the vector width the loop ran at
};

// Runs for about `seconds` in total.
PeakMeasurement measure_fp32_peak(int threads, double seconds = 0.3);

}  // namespace bmojo
