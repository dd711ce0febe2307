// exp written so that `#pragma omp simd` loops vectorise it (libm's expf is a scalar call).
// Range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r and 2^n built in the
// exponent bits. Inputs are clamped to [-87.3, 88.37] (results stay normal floats).
// Relative error below 3e-7 (about 2 ulp) over that range (tests/kernels/test_vector_math.cpp).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace bmojo {

#pragma omp declare simd notinbranch
inline float fast_exp(float x) {
  // Written so that NaN takes the lower bound here (converting NaN to int is undefined behaviour: found by
  // fuzz_state, a crafted state whose huge values overflowed to NaN) and is returned as NaN at the end.
  const float in = x;
  x = x > -87.3f ? x : -87.3f;
  x = x < 88.37f ? x : 88.37f;
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
  const float result = p * std::bit_cast<float>(bits);
  // __builtin_isnan, not `in == in`: GCC 12 if-converts the former and leaves the latter a branch, which
  // kept every `#pragma omp simd` loop calling fast_exp scalar (found by `infer-bench --profile`: SwiGLU
  // at 4 ns an element).
  return __builtin_isnan(in) ? in : result;
}

// log(1 + u) for u in [0, 1], written so that `#pragma omp simd` loops vectorise it. w = 1 + u is split as
// 2^e m with m in [0.707, 1.414] and log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, by its series
// to s^9; then log1p(u) = log(w) u / (w - 1) corrects the rounding of 1 + u (exact for tiny u). Relative
// error below 1e-6 (tests/kernels/test_vector_math.cpp).
#pragma omp declare simd notinbranch
inline float fast_log1p_unit(float u) {
  const float w = 1.0f + u;
  const bool upper = w > 1.41421356f;
  const float m = upper ? 0.5f * w : w;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float z = s * s;
  float p = 1.0f / 9.0f;
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  p = p * z + 1.0f;
  const float log_w = (upper ? 0.693147180559945f : 0.0f) + 2.0f * s * p;
  const float d = w - 1.0f;
  return d == 0.0f ? u : log_w * (u / d);
}

// softplus(v) = log(1 + e^v) = max(v, 0) + log1p(e^-|v|), vectorisable (libm's log1pf and expf are scalar
// calls, and they were most of the Mamba layer's own time).
#pragma omp declare simd notinbranch
inline float fast_softplus(float v) {
  const float a = v < 0.0f ? -v : v;
  return (v > 0.0f ? v : 0.0f) + fast_log1p_unit(fast_exp(-a));
}

}  // namespace bmojo

#ifdef __AVX512F__
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_ps, GCC bug 105593).
#if defined(__clang__)
#include <immintrin.h>
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace bmojo {

// Lane i of the result = the sum of the 16 lanes of v[i]: sixteen horizontal sums in 45 instructions
// instead of about 130 for sixteen _mm512_reduce_add_ps, by a transpose-and-add tree (pairs within 128-bit
// lanes, then 64-bit halves, then 128-bit lanes twice).
inline __m512 sum_lanes16(const __m512* v) {
  __m512 w[8], x[4], y[2];
  for (int i = 0; i < 8; ++i)
    w[i] =
        _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    x[i] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 2; ++i)
    y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// The widest vector the build has (here a zmm), for kernels written once for AVX-512 and AVX2: lane count,
// loads and stores, arithmetic, sum_lanes (lane i = the sum of v[i]'s lanes, for kLanes vectors), and what
// fast_exp_wide needs (floor, and 2^n from whole-number lanes n).
#define BMOJO_WIDE_VEC 1
struct WideVec {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  // 16 bf16 values widened to fp32 (exact: the bf16 bits become the high half).
  static V load_bf16(const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V floor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static V sum_lanes(const V* v) { return sum_lanes16(v); }
  static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace bmojo
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace bmojo {

// Lane i of the result = the sum of the 8 lanes of v[i]: two rounds of pairwise adds within 128-bit lanes
// (hadd), then the two halves of each 128-bit lane added across.
inline __m256 sum_lanes8(const __m256* v) {
  __m256 w[4];
  for (int i = 0; i < 4; ++i) w[i] = _mm256_hadd_ps(v[2 * i], v[2 * i + 1]);
  const __m256 x0 = _mm256_hadd_ps(w[0], w[1]), x1 = _mm256_hadd_ps(w[2], w[3]);
  return _mm256_add_ps(_mm256_permute2f128_ps(x0, x1, 0x20), _mm256_permute2f128_ps(x0, x1, 0x31));
}

// The AVX2 + FMA form of the widest vector (a ymm); see the AVX-512 one above.
#define BMOJO_WIDE_VEC 1
struct WideVec {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_bf16(const uint16_t* p) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V floor(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static V sum_lanes(const V* v) { return sum_lanes8(v); }
  static float reduce_add(V v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
};

}  // namespace bmojo
#endif

#ifdef BMOJO_WIDE_VEC
namespace bmojo {

// fast_exp on a whole vector: the same reduction and polynomial (fused multiply-adds, so the last bit may
// differ).
inline WideVec::V fast_exp_wide(WideVec::V x) {
  using W = WideVec;
  x = W::min(W::max(x, W::set1(-87.3f)), W::set1(88.37f));
  const W::V n = W::floor(W::fmadd(x, W::set1(1.44269504088896341f), W::set1(0.5f)));
  W::V r = W::fnmadd(n, W::set1(0.693145751953125f), x);
  r = W::fnmadd(n, W::set1(1.428606765330187e-06f), r);
  W::V p = W::set1(1.0f / 720.0f);
  p = W::fmadd(p, r, W::set1(1.0f / 120.0f));
  p = W::fmadd(p, r, W::set1(1.0f / 24.0f));
  p = W::fmadd(p, r, W::set1(1.0f / 6.0f));
  p = W::fmadd(p, r, W::set1(0.5f));
  p = W::fmadd(p, r, W::set1(1.0f));
  p = W::fmadd(p, r, W::set1(1.0f));
  return W::mul(p, W::pow2(n));
}

}  // namespace bmojo
#endif

// Row helpers of the softmaxes (attention scores, cross-entropy logits): explicit AVX-512 or AVX2 loops
// where the build has them, because GCC leaves a max reduction scalar and does not vectorise a loop that
// mixes fast_exp with a test for -inf; plain loops otherwise. Entries equal to -inf are masked-out columns.

namespace bmojo {

// The largest of x[0, n) (-inf when n == 0; NaN entries are not ordered and may be skipped).
inline float max_of(const float* x, int n) {
  float m = -std::numeric_limits<float>::infinity();
  int i = 0;
#ifdef __AVX512F__
  __m512 mv = _mm512_set1_ps(m);
  for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(x + i));
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    mv = _mm512_mask_max_ps(mv, tail, mv, _mm512_maskz_loadu_ps(tail, x + i));
    i = n;
  }
  m = _mm512_reduce_max_ps(mv);
#elif defined(__AVX2__) && defined(__FMA__)
  if (n >= 8) {
    __m256 mv = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    m = _mm_cvtss_f32(h);
  }
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// The first index of the largest of x[0, n) (n >= 1): the same index a scan with `>` finds.
inline int argmax_of(const float* x, int n) {
  const float m = max_of(x, n);
  for (int i = 0; i < n; ++i)
    if (x[i] == m) return i;
  return 0;  // only when every entry is NaN
}

// x[j] = exp(x[j] - shift), exactly 0 where x[j] is -inf; returns the sum of the results.
inline float exp_shifted(float* x, int n, float shift) {
  const float ninf = -std::numeric_limits<float>::infinity();
  int i = 0;
  float sum = 0.0f;
#ifdef __AVX512F__
  const __m512 sh = _mm512_set1_ps(shift), ninf_v = _mm512_set1_ps(ninf);
  __m512 acc = _mm512_setzero_ps();
  for (; i < n; i += 16) {
    const __mmask16 lanes =
        n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(lanes, x + i);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(lanes, v, ninf_v, _CMP_NEQ_OQ);
    const __m512 e = _mm512_maskz_mov_ps(keep, fast_exp_wide(_mm512_sub_ps(v, sh)));
    _mm512_mask_storeu_ps(x + i, lanes, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 sh = _mm256_set1_ps(shift), ninf_v = _mm256_set1_ps(ninf);
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 keep = _mm256_cmp_ps(v, ninf_v, _CMP_NEQ_OQ);
    const __m256 e = _mm256_and_ps(keep, fast_exp_wide(_mm256_sub_ps(v, sh)));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = WideVec::reduce_add(acc);
#endif
  for (; i < n; ++i) {
    x[i] = x[i] == ninf ? 0.0f : fast_exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace bmojo
