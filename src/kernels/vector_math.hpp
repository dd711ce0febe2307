// exp written so that `#pragma omp simd` loops vectorise it (libm's expf is a scalar call).
// Range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r and 2^n built in the
// exponent bits. Inputs are clamped to [-87.3, 88.37] (results stay normal floats).
// Relative error below 3e-7 (about 2 ulp) over that range (tests/kernels/test_vector_math.cpp).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace bmojo {

#pragma omp declare simd notinbranch
inline float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.37f ? 88.37f : x);
  // floor(t) through integer conversion: GCC does not vectorise std::floor (trapping-math semantics).
  const float t = x * 1.44269504088896341f + 0.5f;
  int32_t ni = static_cast<int32_t>(t);
  ni -= static_cast<int32_t>(t < static_cast<float>(ni));
  const float n = static_cast<float>(ni);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

}  // namespace bmojo

#ifdef __AVX512F__
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_ps, GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace bmojo {

// fast_exp on 16 lanes: the same reduction and polynomial (fused multiply-adds, so the last bit may differ).
inline __m512 fast_exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.37f));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                           _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i bits =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

}  // namespace bmojo
#endif
