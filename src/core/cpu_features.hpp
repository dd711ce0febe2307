// What the CPU this process runs on can do, detected at run time (CPUID through the compiler's builtins),
// so paths that need a feature refuse clearly on machines without it instead of failing inside a library.
// BMOJO_CPU_DISABLE=avx512bf16,avx512f,... hides features, so the refusal paths can be tested on any machine.
#pragma once
#include <string>

namespace bmojo {

struct CpuFeatures {
  std::string vendor;  // "AuthenticInc", "AuthenticAMD", ...
  int family = 0;      // CPUID family (0x19 Zen 3/4, 0x1a Zen 5 for AMD)
  bool avx2 = false, fma = false, avx512f = false, avx512bf16 = false;
  // fp32 multiply-adds per cycle and core the widest vector units can start: 2 pipes x lanes, with AMD
  // family 0x19's 512-bit instructions split over 256-bit units (Zen 4).
  int fp32_fma_per_cycle() const;
  std::string summary() const;  // e.g. "AuthenticAMD family 0x1a: avx2 fma avx512f avx512bf16"
};

const CpuFeatures& cpu_features();

// bf16 matrix products (train.bf16_matmul) need oneDNN's AVX-512 BF16 kernels. Returns an empty string when
// they are available, else the reason, naming the missing CPU feature.
std::string bf16_matmul_unavailable_reason();

}  // namespace bmojo
