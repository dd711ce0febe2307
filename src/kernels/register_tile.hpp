// Pieces shared by the hand-tiled product kernels (skinny_matmul.cpp, packed_matmul.cpp): one vector of the
// widest ISA the build targets (GCC/Clang vector extensions: an AVX-512 zmm or an AVX2 ymm), unaligned
// loads and stores of it, and a switch that turns a run-time row count into a compile-time tile height.
#pragma once
#include <type_traits>

namespace bmojo::tile {

#if defined(__AVX512F__)
inline constexpr int kLanes = 16;
#else
inline constexpr int kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec load(const float* p) {
  Vec v;
  __builtin_memcpy(&v, p, sizeof(Vec));
  return v;
}
inline void store(float* p, Vec v) {
  __builtin_memcpy(p, &v, sizeof(Vec));
}

// Calls f(std::integral_constant<int, R>) for R = rows (1 <= rows <= Max).
template <int Max, typename F>
void dispatch_rows(int rows, F&& f) {
  if constexpr (Max >= 1) {
    if (rows == Max) return f(std::integral_constant<int, Max>{});
    dispatch_rows<Max - 1>(rows, f);
  }
}

}  // namespace bmojo::tile
