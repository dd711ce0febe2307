#include "core/cpu_features.hpp"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace bmojo {

namespace {

bool hidden(const char* feature) {
  const char* env = std::getenv("BMOJO_CPU_DISABLE");
  if (env == nullptr) return false;
  std::stringstream list(env);
  std::string item;
  while (std::getline(list, item, ','))
    if (item == feature) return true;
  return false;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d)) {
    char v[13];
    std::memcpy(v, &b, 4);
    std::memcpy(v + 4, &d, 4);
    std::memcpy(v + 8, &c, 4);
    v[12] = 0;
    f.vendor = v;
  }
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    const int base = (a >> 8) & 0xf, ext = (a >> 20) & 0xff;
    f.family = base == 0xf ? base + ext : base;
  }
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && !hidden("avx2");
  f.fma = __builtin_cpu_supports("fma") && !hidden("fma");
  f.avx512f = __builtin_cpu_supports("avx512f") && !hidden("avx512f");
  f.avx512bf16 = f.avx512f && __builtin_cpu_supports("avx512bf16") && !hidden("avx512bf16");
  return f;
}

}  // namespace

int CpuFeatures::fp32_fma_per_cycle() const {
  int lanes = 4;
  if (avx2 && fma) lanes = 8;
  if (avx512f) lanes = vendor == "AuthenticAMD" && family == 0x19 ? 8 : 16;
  return 2 * lanes;
}

std::string CpuFeatures::summary() const {
  std::ostringstream o;
  o << vendor << " family 0x" << std::hex << family << ":";
  if (avx2) o << " avx2";
  if (fma) o << " fma";
  if (avx512f) o << " avx512f";
  if (avx512bf16) o << " avx512bf16";
  return o.str();
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string bf16_matmul_unavailable_reason() {
  if (cpu_features().avx512bf16) return "";
  return "bf16 matrix products (train.bf16_matmul=true) need a CPU with AVX-512 BF16 (avx512_bf16 in "
         "/proc/cpuinfo); this CPU (" +
         cpu_features().summary() + ") lacks it: train with fp32 products (train.bf16_matmul=false)";
}

}  // namespace bmojo
