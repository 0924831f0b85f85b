// CPU kernel of Kseg>DenseCrf (and the GPU kernel's registration when built with CUDA).
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif
#include "kseg_ops/cc/kernels/dense_crf_op.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/kernels/cpu_parallel.h"
#include "kseg_ops/cc/lattice/permutohedral.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace kseg {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

namespace {

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
  const __m128 k = _mm_floor_ps(
      _mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)), _mm_set1_ps(0.5f)));
  __m128 r = _mm_sub_ps(x, _mm_mul_ps(k, _mm_set1_ps(0.693359375f)));
  r = _mm_sub_ps(r, _mm_mul_ps(k, _mm_set1_ps(-2.12194440e-4f)));
  __m128 y = _mm_set1_ps(1.9875691500e-4f);
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.3981999507e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(8.3334519073e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(4.1665795894e-2f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.6666665459e-1f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(5.0000001201e-1f));
  y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(_mm_mul_ps(y, r), r), r), _mm_set1_ps(1.0f));
  const __m128i bits =
      _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(k), _mm_set1_epi32(127)), 23);
  return _mm_mul_ps(y, _mm_castsi128_ps(bits));
}

__attribute__((always_inline)) inline void ExpRow(float* e, float m, int cp) {
  const __m128 mv = _mm_set1_ps(m);
  for (int c = 0; c < cp; c += 4)
    _mm_storeu_ps(e + c, ExpNonPositive4(_mm_sub_ps(_mm_loadu_ps(e + c), mv)));
}
#else
inline void ExpRow(float* e, float m, int cp) {
  ExpRow(e, m, cp);  // cp is a multiple of kLanes
}
#endif
inline void ExpRow(double* e, double m, int cp) {
  for (int c = 0; c < cp; ++c) e[c] = std::exp(e[c] - m);
}

// q = softmax(pairwise - unary) over a row of cp = kC (or cp) padded channels; the padding
// lanes of `unary` hold +inf so they come out as (numerically) 0. Reductions use 8 partial lanes because
// compilers do not vectorise ordered float reductions.
template <int kC, typename T>
__attribute__((always_inline)) inline void SoftmaxRow(const T* __restrict unary, const T* __restrict pairwise, int cp,
                       T* __restrict q) {
  constexpr int kLanes = lattice::kChannelBlock;
  if (kC > 0) cp = kC;
  // A local row for fixed widths: lets the compiler vectorise the exp loop.
  T local[kC > 0 ? kC : 1];
  T* e = kC > 0 ? local : q;
  T lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = -std::numeric_limits<T>::infinity();
  for (int c = 0; c < cp; ++c) e[c] = pairwise[c] - unary[c];
  for (int b = 0; b < cp; b += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] = lane[l] > e[b + l] ? lane[l] : e[b + l];
  T m = lane[0];
  for (int l = 1; l < kLanes; ++l) m = m > lane[l] ? m : lane[l];
  ExpRow(e, m, cp);  // cp is a multiple of kLanes
  for (int l = 0; l < kLanes; ++l) lane[l] = 0;
  for (int b = 0; b < cp; b += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += e[b + l];
  T sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  const T inv = T(1) / sum;
  for (int c = 0; c < cp; ++c) q[c] = e[c] * inv;
}

// One mean-field update for pixels [begin, end): slice both kernels (when blurred_* are set)
// and apply the softmax, writing Q rows in place.
template <typename T>
struct UpdateArgs {
  const T* unary_padded;
  T* q_work;
  const lattice::Permutohedral<T>* gaussian;
  const lattice::Permutohedral<T>* bilateral;
  const T* blurred_g;
  const T* blurred_b;
  const T* norm_g;
  const T* norm_b;
  T compat_g, compat_b;
  int cp;
};

template <int kC, typename T>
__attribute__((always_inline)) inline void UpdateRange(const UpdateArgs<T>& a, int64_t begin,
                                                       int64_t end) {
  const int cp = kC > 0 ? kC : a.cp;
  std::vector<T> heap_acc(kC > 0 ? 0 : cp);
  T stack_acc[kC > 0 ? kC : 1];
  T* acc = kC > 0 ? stack_acc : heap_acc.data();
  for (int64_t p = begin; p < end; ++p) {
    for (int c = 0; c < cp; ++c) acc[c] = T(0);
    if (a.blurred_g != nullptr) {
      a.gaussian->template SliceAdd<kC>(p, a.blurred_g, cp, a.compat_g * a.norm_g[p], acc);
      a.bilateral->template SliceAdd<kC>(p, a.blurred_b, cp, a.compat_b * a.norm_b[p], acc);
    }
    SoftmaxRow<kC>(a.unary_padded + p * cp, acc, cp, a.q_work + p * cp);
  }
}

// The same loops compiled for AVX2 + FMA, chosen at run time on CPUs that have them (the
// library itself targets x86-64-v2 so that it runs everywhere).
#if defined(__x86_64__) && defined(__GNUC__)
#define KSEG_WIDE_TARGET __attribute__((target("avx2,fma")))
template <typename T>
bool UseWideKernels() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return std::is_same<T, float>::value && has;
}
#else
#define KSEG_WIDE_TARGET
template <typename T>
bool UseWideKernels() {
  return false;
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// Explicit 8-lane versions of the hot loops for float rows of kC = 8, 16, 24, 32 channels:
// the accumulators of a row stay in ymm registers (the generic loops go through memory).

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
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

// acc += scale * alpha * sum_k b_k * blurred[vertex k] for point p, kD1 = d + 1 corners.
template <int kD1, int kV>
KSEG_WIDE_TARGET __attribute__((always_inline)) inline void SliceAdd8(
    const lattice::Permutohedral<float>& lattice, int64_t p, const float* blurred, float scale,
    __m256* acc) {
  const int d1 = kD1 > 0 ? kD1 : lattice.feature_dim() + 1;
  const float s = scale * lattice.alpha();
  const int32_t* off = lattice.offsets() + p * d1;
  const float* bary = lattice.barycentrics() + p * d1;
  for (int k = 0; k < d1; ++k) {
    const __m256 w = _mm256_set1_ps(s * bary[k]);
    const float* src = blurred + static_cast<int64_t>(off[k]) * (kV * 8);
    for (int v = 0; v < kV; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(src + 8 * v), acc[v]);
  }
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

template <int kC>
KSEG_WIDE_TARGET void UpdateRange8(const UpdateArgs<float>& a, int64_t begin, int64_t end) {
  constexpr int kV = kC / 8;
  const bool dense_crf_dims =
      a.gaussian->feature_dim() == 2 && a.bilateral->feature_dim() == 5;
  for (int64_t p = begin; p < end; ++p) {
    __m256 acc[kV];
    for (int v = 0; v < kV; ++v) acc[v] = _mm256_setzero_ps();
    if (a.blurred_g != nullptr) {
      const float sg = a.compat_g * a.norm_g[p], sb = a.compat_b * a.norm_b[p];
      if (dense_crf_dims) {
        SliceAdd8<3, kV>(*a.gaussian, p, a.blurred_g, sg, acc);
        SliceAdd8<6, kV>(*a.bilateral, p, a.blurred_b, sb, acc);
      } else {
        SliceAdd8<0, kV>(*a.gaussian, p, a.blurred_g, sg, acc);
        SliceAdd8<0, kV>(*a.bilateral, p, a.blurred_b, sb, acc);
      }
    }
    // Softmax of acc - unary (padding lanes: unary +inf, so they come out as 0).
    const float* un = a.unary_padded + p * kC;
    __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    for (int v = 0; v < kV; ++v) {
      acc[v] = _mm256_sub_ps(acc[v], _mm256_loadu_ps(un + 8 * v));
      mx = _mm256_max_ps(mx, acc[v]);
    }
    const __m256 m = _mm256_set1_ps(HorizontalMax(mx));
    __m256 sum = _mm256_setzero_ps();
    for (int v = 0; v < kV; ++v) {
      acc[v] = ExpNonPositive8(_mm256_sub_ps(acc[v], m));
      sum = _mm256_add_ps(sum, acc[v]);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / HorizontalSum(sum));
    float* q = a.q_work + p * kC;
    for (int v = 0; v < kV; ++v) _mm256_storeu_ps(q + 8 * v, _mm256_mul_ps(acc[v], inv));
  }
}

template <int kC>
KSEG_WIDE_TARGET void SplatRange8(const lattice::Permutohedral<float>& lattice,
                                  const lattice::Permutohedral<float>::SplatArgs& a,
                                  int64_t begin, int64_t end) {
  constexpr int kV = kC / 8;
  const int64_t* starts = lattice.vertex_starts();
  const int32_t* points = lattice.splat_points();
  const float* weights = lattice.splat_weights();
  for (int64_t vtx = begin; vtx < end; ++vtx) {
    __m256 acc[kV];
    for (int v = 0; v < kV; ++v) acc[v] = _mm256_setzero_ps();
    const int64_t first = starts[vtx + 1], last = starts[vtx + 2];
    for (int64_t s = first; s < last; ++s) {
      const int64_t p = points[s];
      const float w0 = a.pre_scale ? weights[s] * a.pre_scale[p] : weights[s];
      const __m256 w = _mm256_set1_ps(w0);
      const float* src = a.in + p * a.in_stride;
      for (int v = 0; v < kV; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(src + 8 * v), acc[v]);
    }
    float* dst = a.values + (vtx + 1) * kC;
    for (int v = 0; v < kV; ++v) _mm256_storeu_ps(dst + 8 * v, acc[v]);
  }
}
// Scatter form of the splat for points [begin, end) into buf [(m + 1) x kC]: reads the rows
// of `in` in order, for lattices small enough that buf stays in cache (the gather form reads
// the rows in vertex order, scattered over the whole image for the bilateral kernel).
template <int kC>
KSEG_WIDE_TARGET void ScatterRange8(const lattice::Permutohedral<float>& lattice,
                                    const float* in, const float* pre_scale, int64_t begin,
                                    int64_t end, float* buf) {
  constexpr int kV = kC / 8;
  const int d1 = lattice.feature_dim() + 1;
  const int32_t* offsets = lattice.offsets();
  const float* bary = lattice.barycentrics();
  for (int64_t p = begin; p < end; ++p) {
    __m256 x[kV];
    for (int v = 0; v < kV; ++v) x[v] = _mm256_loadu_ps(in + p * kC + 8 * v);
    const float scale = pre_scale ? pre_scale[p] : 1.0f;
    for (int k = 0; k < d1; ++k) {
      const __m256 w = _mm256_set1_ps(bary[p * d1 + k] * scale);
      float* row = buf + static_cast<int64_t>(offsets[p * d1 + k]) * kC;
      for (int v = 0; v < kV; ++v)
        _mm256_storeu_ps(row + 8 * v, _mm256_fmadd_ps(w, x[v], _mm256_loadu_ps(row + 8 * v)));
    }
  }
}
#endif

// Splat by scatter in this many fixed point ranges, each into its own buffer, summed in
// order (a fixed count, so the result does not depend on the number of threads), when the
// lattice's values fit in kScatterMaxBytes.
constexpr int64_t kScatterParts = 4;
constexpr int64_t kScatterMaxBytes = int64_t{1} << 20;

template <int kC, typename T>
bool UseScatterSplat(const lattice::Permutohedral<T>& lattice, bool wide) {
  return std::is_same<T, float>::value && kC > 0 && wide &&
         (lattice.num_vertices() + 1) * kC * static_cast<int64_t>(sizeof(T)) <= kScatterMaxBytes;
}

// Splat (scatter form) + blur; same contract as Permutohedral::SplatBlur.
template <int kC, typename T>
const T* ScatterSplatBlur(const lattice::Permutohedral<T>& lattice, const T* in,
                          const T* pre_scale, lattice::FilterWorkspace<T>* ws,
                          std::vector<T>* parts, const lattice::ParallelFor& parallel_for) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same<T, float>::value && kC > 0) {
    const int64_t n = lattice.num_points(), rows = lattice.num_vertices() + 1;
    T* values = lattice.SplatTarget(kC, ws);
    parts->resize(kScatterParts * rows * kC);
    parallel_for(kScatterParts, 8.0 * kC * (lattice.feature_dim() + 1) * n / kScatterParts,
                 [&](int64_t begin, int64_t end) {
                   for (int64_t part = begin; part < end; ++part) {
                     T* buf = parts->data() + part * rows * kC;
                     std::fill(buf, buf + rows * kC, T(0));
                     ScatterRange8<kC>(lattice, in, pre_scale, n * part / kScatterParts,
                                       n * (part + 1) / kScatterParts, buf);
                   }
                 });
    parallel_for(rows - 1, 2.0 * kC * kScatterParts, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin + 1; o < end + 1; ++o) {
        T* dst = values + o * kC;
        const T* src = parts->data() + o * kC;
        for (int c = 0; c < kC; ++c) dst[c] = src[c];
        for (int64_t part = 1; part < kScatterParts; ++part) {
          src += rows * kC;
          for (int c = 0; c < kC; ++c) dst[c] += src[c];
        }
      }
    });
    return lattice.BlurValues(kC, false, ws, parallel_for);
  }
#endif
  return nullptr;
}

template <int kC, typename T>
KSEG_WIDE_TARGET void UpdateRangeWide(const UpdateArgs<T>& a, int64_t begin, int64_t end) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same<T, float>::value && kC > 0) {
    UpdateRange8<kC>(a, begin, end);
    return;
  }
#endif
  UpdateRange<kC>(a, begin, end);
}

template <int kC, typename T>
KSEG_WIDE_TARGET void SplatRangeWide(const lattice::Permutohedral<T>& lattice,
                                     const typename lattice::Permutohedral<T>::SplatArgs& a,
                                     int64_t begin, int64_t end) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same<T, float>::value && kC > 0) {
    SplatRange8<kC>(lattice, a, begin, end);
    return;
  }
#endif
  lattice.template SplatRange<kC>(a, begin, end);
}

template <int kC, typename T>
typename lattice::Permutohedral<T>::SplatRangeFn WideSplat(bool wide) {
  return wide ? &SplatRangeWide<kC, T> : nullptr;
}

// Q0 = softmax(-unary), then `iterations` mean-field updates, in q_work [n, kC] (padded rows).
// Each update splats and blurs Q in both lattices, then one pass over the pixels slices both
// kernels and applies the softmax, so the pairwise term never goes through memory.
template <int kC, typename T>
void MeanField(const DenseCrfParams& params, const T* unary, int64_t n, int channels,
               const lattice::Permutohedral<T>& gaussian,
               const lattice::Permutohedral<T>& bilateral, const T* pre_g, const T* pre_b,
               const T* norm_g, const T* norm_b, T* q_work, lattice::FilterWorkspace<T>* ws_g,
               lattice::FilterWorkspace<T>* ws_b, std::vector<T>* unary_buffer,
               const lattice::ParallelFor& parallel_for) {
  const int cp = kC > 0 ? kC : lattice::PaddedChannels(channels);
  const T compat_g = T(params.gaussian_compat), compat_b = T(params.bilateral_compat);
  // Unary in padded rows; +inf in the padding makes those lanes' probabilities exactly 0.
  std::vector<T>& unary_padded = *unary_buffer;
  unary_padded.resize(n * cp);
  parallel_for(n, 2.0 * cp, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* row = unary_padded.data() + p * cp;
      for (int c = 0; c < channels; ++c) row[c] = unary[p * channels + c];
      for (int c = channels; c < cp; ++c) row[c] = std::numeric_limits<T>::infinity();
    }
  });
  const bool wide = UseWideKernels<T>();
  const bool scatter_b = UseScatterSplat<kC>(bilateral, wide);
  std::vector<T> parts;
  for (int it = 0; it <= params.iterations; ++it) {
    UpdateArgs<T> args{unary_padded.data(), q_work, &gaussian, &bilateral, nullptr, nullptr,
                       norm_g, norm_b, compat_g, compat_b, cp};
    if (it > 0) {
      args.blurred_g = gaussian.SplatBlur(q_work, cp, cp, pre_g, false, ws_g, parallel_for,
                                          WideSplat<kC, T>(wide));
      args.blurred_b =
          scatter_b ? ScatterSplatBlur<kC>(bilateral, q_work, pre_b, ws_b, &parts, parallel_for)
                    : bilateral.SplatBlur(q_work, cp, cp, pre_b, false, ws_b, parallel_for,
                                          WideSplat<kC, T>(wide));
    }
    parallel_for(n, 40.0 * cp, [&](int64_t begin, int64_t end) {
      if (wide)
        UpdateRangeWide<kC>(args, begin, end);
      else
        UpdateRange<kC>(args, begin, end);
    });
  }
}

}  // namespace

namespace {

// Buffers and lattices of one DenseCrf call. The last one used is kept for the next call
// (up to kCachedScratchBytes): fresh multi-megabyte allocations cost a page fault per 4 KiB.
template <typename T>
struct CrfScratch {
  std::vector<T> gaussian_features, bilateral_features, q_work, ones, norm_g, norm_b, unary;
  lattice::Permutohedral<T> gaussian, bilateral;
  lattice::FilterWorkspace<T> workspace, ws_g, ws_b;
};
constexpr int64_t kCachedScratchBytes = int64_t{512} << 20;

template <typename T>
class ScratchCache {
 public:
  std::unique_ptr<CrfScratch<T>> Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_) return std::move(cached_);
    }
    return std::make_unique<CrfScratch<T>>();
  }
  void Give(std::unique_ptr<CrfScratch<T>> scratch, int64_t bytes) {
    if (bytes > kCachedScratchBytes) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!cached_) cached_ = std::move(scratch);
  }

 private:
  std::mutex mu_;
  std::unique_ptr<CrfScratch<T>> cached_;
};

template <typename T>
ScratchCache<T>& GetScratchCache() {
  static ScratchCache<T>* cache = new ScratchCache<T>();
  return *cache;
}

}  // namespace

namespace functor {

template <typename T>
absl::Status DenseCrf<CPUDevice, T>::operator()(OpKernelContext* ctx, const CPUDevice& d,
                                                const DenseCrfParams& params, const T* unary,
                                                const T* image, int64_t batch, int64_t h,
                                                int64_t w, int channels, T* q) {
  const lattice::ParallelFor parallel_for = MakeParallelFor(d);
  const int64_t n = h * w;
  const int cp = lattice::PaddedChannels(channels);
  std::unique_ptr<CrfScratch<T>> scratch = GetScratchCache<T>().Take();
  std::vector<T>& gaussian_features = scratch->gaussian_features;
  std::vector<T>& bilateral_features = scratch->bilateral_features;
  gaussian_features.resize(n * 2);
  bilateral_features.resize(n * 5);
  // Q and the pairwise term, channels padded so the lattice loops vectorise (every element
  // is written by the first mean-field pass).
  std::vector<T>& q_work = scratch->q_work;
  q_work.resize(n * cp);
  std::vector<T>& ones = scratch->ones;
  std::vector<T>& norm_g = scratch->norm_g;
  std::vector<T>& norm_b = scratch->norm_b;
  ones.assign(n, T(1));
  norm_g.resize(n);
  norm_b.resize(n);
  lattice::Permutohedral<T>& gaussian = scratch->gaussian;
  lattice::Permutohedral<T>& bilateral = scratch->bilateral;
  lattice::FilterWorkspace<T>& workspace = scratch->workspace;
  lattice::FilterWorkspace<T>& ws_g = scratch->ws_g;
  lattice::FilterWorkspace<T>& ws_b = scratch->ws_b;
  struct GiveBack {
    std::unique_ptr<CrfScratch<T>>& scratch;
    int64_t bytes;
    ~GiveBack() {
      const int64_t total =
          bytes + scratch->gaussian.MemoryBytes() + scratch->bilateral.MemoryBytes();
      GetScratchCache<T>().Give(std::move(scratch), total);
    }
  } give_back{scratch, static_cast<int64_t>(sizeof(T)) * n * (2 + 5 + 2 * cp + 3)};
  const bool symmetric = params.normalization == CrfNormalization::kSymmetric;

  for (int64_t b = 0; b < batch; ++b) {
    const T* img = image + b * n * 3;
    const T* un = unary + b * n * channels;
    const T inv_gs = T(1) / T(params.gaussian_sxy), inv_bs = T(1) / T(params.bilateral_sxy),
            inv_br = T(1) / T(params.bilateral_srgb);
    parallel_for(n, 20, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T x = T(p % w), y = T(p / w);
        gaussian_features[p * 2] = x * inv_gs;
        gaussian_features[p * 2 + 1] = y * inv_gs;
        T* f = &bilateral_features[p * 5];
        f[0] = x * inv_bs;
        f[1] = y * inv_bs;
        f[2] = img[p * 3] * inv_br;
        f[3] = img[p * 3 + 1] * inv_br;
        f[4] = img[p * 3 + 2] * inv_br;
      }
    });
    std::string error = gaussian.Build(gaussian_features.data(), n, 2, 2, parallel_for);
    if (!error.empty())
      return absl::InvalidArgumentError(absl::StrCat(
          "gaussian_sxy = ", params.gaussian_sxy, " makes pixel positions unusable: ", error));
    error = bilateral.Build(bilateral_features.data(), n, 5, 5, parallel_for);
    if (!error.empty())
      return absl::InvalidArgumentError(absl::StrCat(
          "image (batch element ", b, ") with bilateral_sxy = ", params.bilateral_sxy,
          ", bilateral_srgb = ", params.bilateral_srgb, ": ", error));

    // Normalisers from the filter of ones: D^-1/2 (symmetric) or D^-1 (after).
    gaussian.Filter(ones.data(), 1, 1, nullptr, nullptr, T(1), false, false, norm_g.data(), 1,
                    &workspace, parallel_for);
    bilateral.Filter(ones.data(), 1, 1, nullptr, nullptr, T(1), false, false, norm_b.data(), 1,
                     &workspace, parallel_for);
    parallel_for(n, 30, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        norm_g[p] = symmetric ? T(1) / std::sqrt(norm_g[p] + T(1e-20)) : T(1) / (norm_g[p] + T(1e-20));
        norm_b[p] = symmetric ? T(1) / std::sqrt(norm_b[p] + T(1e-20)) : T(1) / (norm_b[p] + T(1e-20));
      }
    });
    const T* pre_g = symmetric ? norm_g.data() : nullptr;
    const T* pre_b = symmetric ? norm_b.data() : nullptr;

    T* q_out = q + b * n * channels;
    switch (cp) {
      case 8: MeanField<8>(params, un, n, channels, gaussian, bilateral, pre_g, pre_b, norm_g.data(), norm_b.data(), q_work.data(), &ws_g, &ws_b, &scratch->unary, parallel_for); break;
      case 16: MeanField<16>(params, un, n, channels, gaussian, bilateral, pre_g, pre_b, norm_g.data(), norm_b.data(), q_work.data(), &ws_g, &ws_b, &scratch->unary, parallel_for); break;
      case 24: MeanField<24>(params, un, n, channels, gaussian, bilateral, pre_g, pre_b, norm_g.data(), norm_b.data(), q_work.data(), &ws_g, &ws_b, &scratch->unary, parallel_for); break;
      case 32: MeanField<32>(params, un, n, channels, gaussian, bilateral, pre_g, pre_b, norm_g.data(), norm_b.data(), q_work.data(), &ws_g, &ws_b, &scratch->unary, parallel_for); break;
      default: MeanField<0>(params, un, n, channels, gaussian, bilateral, pre_g, pre_b, norm_g.data(), norm_b.data(), q_work.data(), &ws_g, &ws_b, &scratch->unary, parallel_for); break;
    }
    parallel_for(n, 2.0 * channels, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        std::copy(q_work.data() + p * cp, q_work.data() + p * cp + channels,
                  q_out + p * channels);
    });
  }
  return absl::OkStatus();
}

template struct DenseCrf<CPUDevice, float>;
template struct DenseCrf<CPUDevice, double>;

}  // namespace functor

namespace {

// Index of the first non-finite element, or -1.
template <typename T>
int64_t FirstNonFinite(const T* data, int64_t size, const CPUDevice& d) {
  std::atomic<int64_t> first(std::numeric_limits<int64_t>::max());
  MakeParallelFor(d)(size, 2, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (!std::isfinite(data[i])) {
        int64_t cur = first.load();
        while (i < cur && !first.compare_exchange_weak(cur, i)) {
        }
        return;
      }
    }
  });
  const int64_t f = first.load();
  return f == std::numeric_limits<int64_t>::max() ? -1 : f;
}

}  // namespace

template <typename Device, typename T>
class DenseCrfOp : public OpKernel {
 public:
  explicit DenseCrfOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("iterations", &params_.iterations));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gaussian_sxy", &params_.gaussian_sxy));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gaussian_compat", &params_.gaussian_compat));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bilateral_sxy", &params_.bilateral_sxy));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bilateral_srgb", &params_.bilateral_srgb));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bilateral_compat", &params_.bilateral_compat));
    std::string normalization;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("normalization", &normalization));
    params_.normalization =
        normalization == "after" ? CrfNormalization::kAfter : CrfNormalization::kSymmetric;
    for (const auto& [name, value] :
         {std::pair<const char*, float>{"gaussian_sxy", params_.gaussian_sxy},
          {"bilateral_sxy", params_.bilateral_sxy},
          {"bilateral_srgb", params_.bilateral_srgb}}) {
      OP_REQUIRES(ctx, std::isfinite(value) && value > 0,
                  absl::InvalidArgumentError(
                      absl::StrCat(name, " must be a positive finite number, got ", value)));
    }
    for (const auto& [name, value] :
         {std::pair<const char*, float>{"gaussian_compat", params_.gaussian_compat},
          {"bilateral_compat", params_.bilateral_compat}}) {
      OP_REQUIRES(ctx, std::isfinite(value),
                  absl::InvalidArgumentError(
                      absl::StrCat(name, " must be a finite number, got ", value)));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& unary = ctx->input(0);
    const Tensor& image = ctx->input(1);
    OP_REQUIRES(ctx, unary.dims() == 4,
                absl::InvalidArgumentError(absl::StrCat(
                    "unary must have rank 4 [batch, height, width, classes], got shape ",
                    unary.shape().DebugString())));
    OP_REQUIRES(ctx, image.dims() == 4 && image.dim_size(3) == 3,
                absl::InvalidArgumentError(absl::StrCat(
                    "image must have shape [batch, height, width, 3], got ",
                    image.shape().DebugString())));
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES(ctx, unary.dim_size(i) == image.dim_size(i),
                  absl::InvalidArgumentError(absl::StrCat(
                      "unary ", unary.shape().DebugString(), " and image ",
                      image.shape().DebugString(), " must agree in batch, height and width")));
    }
    const int64_t classes = unary.dim_size(3);
    OP_REQUIRES(ctx, classes >= 1 && classes <= 4096,
                absl::InvalidArgumentError(
                    absl::StrCat("the number of classes must be in [1, 4096], got ", classes)));
    const int64_t h = unary.dim_size(1), w = unary.dim_size(2);
    OP_REQUIRES(ctx, h >= 1 && w >= 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "image must not be empty, got height ", h, " and width ", w)));
    OP_REQUIRES(ctx, h * w < (int64_t{1} << 31) / 6,
                absl::InvalidArgumentError(
                    absl::StrCat("image too large for the lattice: ", h, " x ", w, " pixels")));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, unary.shape(), &output));
    if (unary.NumElements() == 0) return;
    if constexpr (std::is_same<Device, CPUDevice>::value) {
      const CPUDevice& d = ctx->eigen_device<CPUDevice>();
      const int64_t bad_unary = FirstNonFinite(unary.flat<T>().data(), unary.NumElements(), d);
      OP_REQUIRES(ctx, bad_unary < 0,
                  absl::InvalidArgumentError(absl::StrCat(
                      "unary holds a non-finite value (NaN or Inf in the probabilities or "
                      "logits) at flat index ",
                      bad_unary)));
      const int64_t bad_pixel = FirstNonFinite(image.flat<T>().data(), image.NumElements(), d);
      OP_REQUIRES(ctx, bad_pixel < 0,
                  absl::InvalidArgumentError(absl::StrCat(
                      "image holds a non-finite value at flat index ", bad_pixel)));
    }
    OP_REQUIRES_OK(ctx, functor::DenseCrf<Device, T>()(
                            ctx, ctx->eigen_device<Device>(), params_, unary.flat<T>().data(),
                            image.flat<T>().data(), unary.dim_size(0), h, w,
                            static_cast<int>(classes), output->flat<T>().data()));
  }

 private:
  DenseCrfParams params_;
};

#define KSEG_REGISTER_CPU(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("Kseg>DenseCrf").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      DenseCrfOp<CPUDevice, T>);
KSEG_REGISTER_CPU(float);
KSEG_REGISTER_CPU(double);
#undef KSEG_REGISTER_CPU

#if GOOGLE_CUDA
#define KSEG_REGISTER_GPU(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("Kseg>DenseCrf").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      DenseCrfOp<GPUDevice, T>);
KSEG_REGISTER_GPU(float);
KSEG_REGISTER_GPU(double);
#undef KSEG_REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace kseg
