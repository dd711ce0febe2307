// fp32 -> bf16 rounding for the bf16 matmul path: operands are rounded to nearest even into dense bf16
// copies before each product. Written here rather than left to a oneDNN reorder because the reorders ran at
// about 16 GB/s on this model's operands, a tenth of the bf16 step (`bmojo bench --profile`,
// matmul_bf16_convert; docs/performance.md, session 6).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace bmojo {

// The definition: round to nearest, ties to even; NaN stays a (quiet) NaN.
inline uint16_t round_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// The exact widening back to fp32.
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// out[i] = round_to_bf16(x[i]) and out[i] = bf16_to_float(h[i]) for i < n: the definitions over a run of
// values (a state's key/value rows).
inline void round_to_bf16(uint16_t* out, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = round_to_bf16(x[i]);
}
inline void bf16_to_float(float* out, const uint16_t* h, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(h[i]);
}

// out (rows, cols) dense = round_to_bf16 of x (rows, cols) with leading dimension ld. Threads over rows for
// large matrices (call from outside a parallel region for that). With AVX-512 BF16 the conversion is one
// instruction per 16 values, which treats fp32 subnormal inputs as zero.
void convert_to_bf16(uint16_t* out, const float* x, int64_t rows, int64_t cols, int64_t ld);

}  // namespace bmojo
