// SIMD helpers of the dense CRF's CPU mean field (dense_crf.h), TF-free: exp and log
// polynomials on 1, 4 and 8 float lanes, horizontal reductions, and the run-time choice of the
// AVX2 + FMA kernels (the library itself targets x86-64-v2 so that it runs everywhere).
#ifndef KSEG_OPS_CC_LATTICE_SIMD_H_
#define KSEG_OPS_CC_LATTICE_SIMD_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "kseg_ops/cc/common/cpu_features.h"

namespace kseg {
namespace simd {

// exp(x) for x <= 0 (the softmax subtracts the maximum first), branch-free so that loops over
// channels vectorise: Cephes' expf polynomial, about 1 ulp on [-87, 0]. Inputs below -87
// (including the -inf of padding lanes) give exp(-87) ~ 1.6e-38, which is 0 for the softmax.
inline float ExpNonPositive(float x) {
  x = std::max(x, -87.0f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f - k * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline double ExpNonPositive(double x) { return std::exp(x); }

#if defined(__SSE4_1__)
// The same polynomial four lanes at a time (compilers leave the scalar loop unvectorised).
__attribute__((always_inline)) inline __m128 ExpNonPositive4(__m128 x) {
  x = _mm_max_ps(x, _mm_set1_ps(-87.0f));
  const __m128 k =
      _mm_floor_ps(_mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)), _mm_set1_ps(0.5f)));
  __m128 r = _mm_sub_ps(x, _mm_mul_ps(k, _mm_set1_ps(0.693359375f)));
  r = _mm_sub_ps(r, _mm_mul_ps(k, _mm_set1_ps(-2.12194440e-4f)));
  __m128 y = _mm_set1_ps(1.9875691500e-4f);
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.3981999507e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(8.3334519073e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(4.1665795894e-2f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.6666665459e-1f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(5.0000001201e-1f));
  y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(_mm_mul_ps(y, r), r), r), _mm_set1_ps(1.0f));
  const __m128i bits = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(k), _mm_set1_epi32(127)), 23);
  return _mm_mul_ps(y, _mm_castsi128_ps(bits));
}

__attribute__((always_inline)) inline void ExpRow(float* e, float m, int cp) {
  const __m128 mv = _mm_set1_ps(m);
  for (int c = 0; c < cp; c += 4)
    _mm_storeu_ps(e + c, ExpNonPositive4(_mm_sub_ps(_mm_loadu_ps(e + c), mv)));
}
#else
inline void ExpRow(float* e, float m, int cp) {
  for (int c = 0; c < cp; ++c) e[c] = ExpNonPositive(e[c] - m);
}
#endif
inline void ExpRow(double* e, double m, int cp) {
  for (int c = 0; c < cp; ++c) e[c] = std::exp(e[c] - m);
}

// Functions compiled for AVX2 + FMA carry KSEG_WIDE_TARGET and run only where
// UseWideKernels<T>() holds (float on a CPU with AVX2 and FMA).
#if defined(__x86_64__) && defined(__GNUC__)
#define KSEG_WIDE_TARGET __attribute__((target("avx2,fma")))
#define KSEG_WIDE_KERNELS 1
#else
#define KSEG_WIDE_TARGET
#define KSEG_WIDE_KERNELS 0
#endif

template <typename T>
bool UseWideKernels() {
  return KSEG_WIDE_KERNELS && std::is_same<T, float>::value && cpu::HasAvx2Fma();
}

#if KSEG_WIDE_KERNELS
// ExpNonPositive on 8 lanes (same polynomial and clamping as the scalar version).
KSEG_WIDE_TARGET __attribute__((always_inline)) inline __m256 ExpNonPositive8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 k = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(y, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

// log(x) on 8 lanes for positive normal x (Cephes' logf: x = m 2^e, m in [sqrt(1/2), sqrt(2)),
// a degree-9 polynomial in m - 1; about 1 ulp).
KSEG_WIDE_TARGET __attribute__((always_inline)) inline __m256 LogPositive8(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  __m256 e =
      _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F000000)));
  // m in [0.5, 1): below sqrt(1/2) use 2m and e - 1.
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
  const __m256 t = _mm256_add_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.0f)), _mm256_and_ps(small, m));
  const __m256 z = _mm256_mul_ps(t, t);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, t), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(t, y));
}

KSEG_WIDE_TARGET __attribute__((always_inline)) inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
KSEG_WIDE_TARGET __attribute__((always_inline)) inline float HorizontalSum(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
#endif  // KSEG_WIDE_KERNELS

}  // namespace simd
}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_SIMD_H_
