#include "core/bf16.hpp"

#include <omp.h>

#include <algorithm>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace bmojo {

namespace {

void convert_row(uint16_t* out, const float* x, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  for (; i + 32 <= n; i += 32) {
    const __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(out + i, reinterpret_cast<__m512i>(pair));
  }
  for (; i + 16 <= n; i += 16) {
    const __m256bh half = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), reinterpret_cast<__m256i>(half));
  }
#endif
  for (; i < n; ++i) out[i] = round_to_bf16(x[i]);
}

// Below this many values a conversion stays on the calling thread (waking the team costs more).
constexpr int64_t kParallelMinValues = 1 << 15;

}  // namespace

void convert_to_bf16(uint16_t* out, const float* x, int64_t rows, int64_t cols, int64_t ld) {
  if (rows <= 0 || cols <= 0) return;
  if (ld == cols) {
    cols *= rows;
    rows = 1;
  }
  const int64_t total = rows * cols;
  if (total < kParallelMinValues || omp_in_parallel()) {
    for (int64_t r = 0; r < rows; ++r) convert_row(out + r * cols, x + r * ld, cols);
    return;
  }
  // Split the values evenly over the team, in whole 32-value pieces within a row.
#pragma omp parallel
  {
    const int parts = omp_get_num_threads(), p = omp_get_thread_num();
    const int64_t pieces = (total + 31) / 32;
    const int64_t begin = std::min(total, pieces * p / parts * 32);
    const int64_t end = std::min(total, pieces * (p + 1) / parts * 32);
    for (int64_t v = begin; v < end;) {
      const int64_t r = v / cols, c = v % cols;
      const int64_t n = std::min(cols - c, end - v);
      convert_row(out + v, x + r * ld + c, n);
      v += n;
    }
  }
}

}  // namespace bmojo
