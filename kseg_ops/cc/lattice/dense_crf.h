// The dense CRF's mean-field inference on the CPU (the math: dense_crf_params.h), TF-free, so
// that it is tested in plain C++ (dense_crf_test.cc, against an exact O(N^2) mean field) and
// the host-emulated GPU code is compared against it. kernels/dense_crf_op.cc is the TF glue.
//
// Per image: the gaussian and bilateral lattices (permutohedral.h) are built once, the
// normalisers come from filtering a vector of ones, then the mean field runs in one of two ways:
//  - fused (float rows of 8..32 channels on CPUs with AVX2 + FMA): one pass over the pixels per
//    iteration slices both lattices, applies the softmax and scatters the new Q straight into
//    per-range splat buffers; Q goes through memory only at the end;
//  - otherwise: each update splats and blurs Q in both lattices, then one pass slices both and
//    applies the softmax.
// Every output element is computed in a fixed order: results do not depend on the thread count.
#ifndef KSEG_OPS_CC_LATTICE_DENSE_CRF_H_
#define KSEG_OPS_CC_LATTICE_DENSE_CRF_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kseg_ops/cc/common/parallel_for.h"
#include "kseg_ops/cc/common/run_control.h"
#include "kseg_ops/cc/lattice/dense_crf_params.h"
#include "kseg_ops/cc/lattice/permutohedral.h"
#include "kseg_ops/cc/lattice/scratch_cache.h"
#include "kseg_ops/cc/lattice/simd.h"

namespace kseg {
namespace crf {

using lattice::FilterWorkspace;
using lattice::Permutohedral;
using simd::ExpRow;
using simd::UseWideKernels;
#if KSEG_WIDE_KERNELS
using simd::ExpNonPositive8;
using simd::HorizontalMax;
using simd::HorizontalSum;
using simd::LogPositive8;
#endif

// q = softmax(pairwise - unary) over a row of cp = kC (or cp) padded channels; the padding
// lanes of `unary` hold +inf so they come out as (numerically) 0. Reductions use 8 partial lanes
// because compilers do not vectorise ordered float reductions.
template <int kC, typename T>
__attribute__((always_inline)) inline void SoftmaxRow(const T* __restrict unary,
                                                      const T* __restrict pairwise, int cp,
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
  const Permutohedral<T>* gaussian;
  const Permutohedral<T>* bilateral;
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

#if KSEG_WIDE_KERNELS
// Unary rows for points [begin, end): row[c] = -log(clip(p, clip, 1)) (probabilities), -x
// (logits) or x (unary) for c < channels, +inf in the padding lanes up to kC.
template <int kC>
KSEG_WIDE_TARGET void UnaryRange8(const float* scores, int channels, CrfScores kind, int64_t begin,
                                  int64_t end, float* unary_padded) {
  constexpr int kV = kC / 8;
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 lo = _mm256_set1_ps(static_cast<float>(kProbabilityClip));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t p = begin; p < end; ++p) {
    const float* in = scores + p * channels;
    float* row = unary_padded + p * kC;
    for (int v = 0; v < kV; ++v) {
      const int valid = std::min(8, std::max(0, channels - 8 * v));
      const __m256i lanes =
          _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      __m256 x = _mm256_maskload_ps(in + 8 * v, lanes);
      if (kind == CrfScores::kProbabilities)
        x = LogPositive8(_mm256_min_ps(_mm256_max_ps(x, lo), one));
      if (kind != CrfScores::kUnary) x = _mm256_xor_ps(x, sign);
      _mm256_storeu_ps(row + 8 * v, _mm256_blendv_ps(inf, x, _mm256_castsi256_ps(lanes)));
    }
  }
}

// acc += scale * alpha * sum_k b_k * blurred[vertex k] for point p, kD1 = d + 1 corners.
template <int kD1, int kV>
KSEG_WIDE_TARGET __attribute__((always_inline)) inline void SliceAdd8(
    const Permutohedral<float>& lattice, int64_t p, const float* blurred, float scale,
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

// acc = the pairwise term of point p: both kernels sliced from their blurred values and
// scaled by compat * norm (zero while blurred_g is null, before the first blur).
template <int kV>
KSEG_WIDE_TARGET __attribute__((always_inline)) inline void PairwiseRow8(const UpdateArgs<float>& a,
                                                                         bool dense_crf_dims,
                                                                         const float* blurred_g,
                                                                         const float* blurred_b,
                                                                         int64_t p, __m256* acc) {
  for (int v = 0; v < kV; ++v) acc[v] = _mm256_setzero_ps();
  if (blurred_g == nullptr) return;
  const float sg = a.compat_g * a.norm_g[p], sb = a.compat_b * a.norm_b[p];
  if (dense_crf_dims) {
    SliceAdd8<3, kV>(*a.gaussian, p, blurred_g, sg, acc);
    SliceAdd8<6, kV>(*a.bilateral, p, blurred_b, sb, acc);
  } else {
    SliceAdd8<0, kV>(*a.gaussian, p, blurred_g, sg, acc);
    SliceAdd8<0, kV>(*a.bilateral, p, blurred_b, sb, acc);
  }
}

template <int kC>
KSEG_WIDE_TARGET void UpdateRange8(const UpdateArgs<float>& a, int64_t begin, int64_t end) {
  constexpr int kV = kC / 8;
  const bool dense_crf_dims = a.gaussian->feature_dim() == 2 && a.bilateral->feature_dim() == 5;
  for (int64_t p = begin; p < end; ++p) {
    __m256 acc[kV];
    PairwiseRow8<kV>(a, dense_crf_dims, a.blurred_g, a.blurred_b, p, acc);
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
KSEG_WIDE_TARGET void SplatRange8(const Permutohedral<float>& lattice,
                                  const Permutohedral<float>::SplatArgs& a, int64_t begin,
                                  int64_t end) {
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
      for (int v = 0; v < kV; ++v)
        acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(src + 8 * v), acc[v]);
    }
    float* dst = a.values + (vtx + 1) * kC;
    for (int v = 0; v < kV; ++v) _mm256_storeu_ps(dst + 8 * v, acc[v]);
  }
}
#endif  // KSEG_WIDE_KERNELS

// Fused mean field (float rows of kC channels, AVX2): one pass over the pixels per iteration
// slices both kernels, applies the softmax and scatters the new Q straight into the next
// splat, so Q itself never goes through memory (only the final one is written out).
// The pixels are cut into a fixed number of ranges (set by the pixel count alone, so results
// do not depend on the number of threads); each range scatters into its own buffer covering
// just the vertices its pixels touch, and the buffers are summed in range order.
constexpr int64_t kFusedParts = 8;
constexpr int64_t kFusedMaxBufferBytes = int64_t{96} << 20;

inline int64_t FusedParts(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(kFusedParts, n / 4096));
}

// Per-range splat buffers of one lattice: range i covers one-based vertices
// [lo[i], lo[i] + rows[i]) at buffer row start[i].
struct PartBuffers {
  std::vector<int64_t> lo, rows, start;
  int64_t total_rows = 0;
};

template <typename T>
PartBuffers MakePartBuffers(const Permutohedral<T>& lattice, int64_t parts,
                            const ParallelFor& parallel_for) {
  const int64_t n = lattice.num_points();
  const int d1 = lattice.feature_dim() + 1;
  const int32_t* off = lattice.offsets();
  PartBuffers b;
  b.lo.assign(parts, 0);
  b.rows.assign(parts, 0);
  b.start.assign(parts, 0);
  parallel_for(parts, 2.0 * d1 * n / parts, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int32_t lo = std::numeric_limits<int32_t>::max(), hi = 0;
      for (int64_t e = n * i / parts * d1; e < n * (i + 1) / parts * d1; ++e) {
        lo = std::min(lo, off[e]);
        hi = std::max(hi, off[e]);
      }
      b.lo[i] = lo <= hi ? lo : 0;
      b.rows[i] = lo <= hi ? hi - lo + 1 : 0;
    }
  });
  for (int64_t i = 0; i < parts; ++i) {
    b.start[i] = b.total_rows;
    b.total_rows += b.rows[i];
  }
  return b;
}

// Sums the range buffers of one lattice ([rows x channels] each), in range order, into its
// splat target and blurs.
template <typename T>
const T* ReduceAndBlur(const Permutohedral<T>& lattice, const PartBuffers& pb, const T* bufs,
                       int channels, FilterWorkspace<T>* ws, const ParallelFor& parallel_for) {
  T* values = lattice.SplatTarget(channels, ws);
  const int64_t m = lattice.num_vertices();
  const int64_t parts = static_cast<int64_t>(pb.lo.size());
  parallel_for(m, 2.0 * channels * 2, [&](int64_t begin, int64_t end) {
    const int64_t first = begin + 1, last = end + 1;  // one-based rows [first, last)
    std::fill(values + first * channels, values + last * channels, T(0));
    for (int64_t i = 0; i < parts; ++i) {
      const int64_t lo = std::max(first, pb.lo[i]), hi = std::min(last, pb.lo[i] + pb.rows[i]);
      if (lo >= hi) continue;
      const T* src = bufs + (pb.start[i] + lo - pb.lo[i]) * channels;
      T* dst = values + lo * channels;
      for (int64_t e = 0; e < (hi - lo) * channels; ++e) dst[e] += src[e];
    }
  });
  return lattice.BlurValues(channels, false, ws, parallel_for);
}

// norm[p] = (L 1)[p], the filter of a vector of ones, splatting by scatter into the range
// buffers (for lattices built without splat lists).
template <typename T>
void FilterOnesByScatter(const Permutohedral<T>& lattice, const PartBuffers& pb,
                         std::vector<T>* part_buffer, FilterWorkspace<T>* ws,
                         const ParallelFor& parallel_for, T* norm) {
  const int64_t n = lattice.num_points();
  const int d1 = lattice.feature_dim() + 1;
  const int64_t parts = static_cast<int64_t>(pb.lo.size());
  part_buffer->assign(pb.total_rows, T(0));
  const int32_t* off = lattice.offsets();
  const T* bary = lattice.barycentrics();
  parallel_for(parts, 4.0 * d1 * n / parts, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* buf = part_buffer->data() + pb.start[i] - pb.lo[i];
      for (int64_t e = n * i / parts * d1; e < n * (i + 1) / parts * d1; ++e)
        buf[off[e]] += bary[e];
    }
  });
  const T* blurred = ReduceAndBlur(lattice, pb, part_buffer->data(), 1, ws, parallel_for);
  const T alpha = lattice.alpha();
  parallel_for(n, 4.0 * d1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T sum = 0;
      for (int k = 0; k < d1; ++k) sum += bary[p * d1 + k] * blurred[off[p * d1 + k]];
      norm[p] = alpha * sum;
    }
  });
}

// Whether the fused mean field runs for these lattices and rows of cp channels (float, AVX2,
// range buffers within kFusedMaxBufferBytes).
template <typename T>
bool CanFuse(int cp, const PartBuffers& pg, const PartBuffers& pb, bool wide) {
  return std::is_same<T, float>::value && wide && (cp == 8 || cp == 16 || cp == 24 || cp == 32) &&
         (pg.total_rows + pb.total_rows) * cp * static_cast<int64_t>(sizeof(T)) <=
             kFusedMaxBufferBytes;
}

#if KSEG_WIDE_KERNELS
// buf[vertex k - lo] += bary_k * scale * x for point p's d + 1 simplex corners.
template <int kD1, int kV>
KSEG_WIDE_TARGET __attribute__((always_inline)) inline void ScatterPoint8(
    const Permutohedral<float>& lattice, int64_t p, const __m256* x, float scale, float* buf,
    int64_t lo) {
  const int d1 = kD1 > 0 ? kD1 : lattice.feature_dim() + 1;
  const int32_t* off = lattice.offsets() + p * d1;
  const float* bary = lattice.barycentrics() + p * d1;
  for (int k = 0; k < d1; ++k) {
    const __m256 w = _mm256_set1_ps(bary[k] * scale);
    float* row = buf + (static_cast<int64_t>(off[k]) - lo) * (kV * 8);
    for (int v = 0; v < kV; ++v)
      _mm256_storeu_ps(row + 8 * v, _mm256_fmadd_ps(w, x[v], _mm256_loadu_ps(row + 8 * v)));
  }
}

// The scatter of a block of pixels into one lattice, corner by corner: consecutive pixels on
// the same vertex are summed in registers and their vertex row is updated once per run. For
// the spatial lattice (most neighbouring pixels share a vertex) this removes the chains of
// read-modify-writes of one row by pixel after pixel; for the bilateral lattice, where runs
// are shorter, the mispredicted run ends cost more than they save (ScatterPoint8 there).
template <int kD1, int kV>
KSEG_WIDE_TARGET __attribute__((always_inline)) inline void ScatterRuns8(
    const Permutohedral<float>& lattice, int64_t p0, int count, const float (*rows)[kV * 8],
    const float* scale, float* buf, int64_t lo) {
  const int d1 = kD1 > 0 ? kD1 : lattice.feature_dim() + 1;
  const int32_t* off = lattice.offsets() + p0 * d1;
  const float* bary = lattice.barycentrics() + p0 * d1;
  for (int k = 0; k < d1; ++k) {
    int32_t vertex = off[k];
    __m256 acc[kV];
    const __m256 w0 = _mm256_set1_ps(bary[k] * scale[0]);
    for (int v = 0; v < kV; ++v) acc[v] = _mm256_mul_ps(w0, _mm256_load_ps(rows[0] + 8 * v));
    for (int i = 1; i < count; ++i) {
      const int32_t next = off[i * d1 + k];
      const __m256 w = _mm256_set1_ps(bary[i * d1 + k] * scale[i]);
      if (next != vertex) {
        float* row = buf + (static_cast<int64_t>(vertex) - lo) * (kV * 8);
        for (int v = 0; v < kV; ++v)
          _mm256_storeu_ps(row + 8 * v, _mm256_add_ps(acc[v], _mm256_loadu_ps(row + 8 * v)));
        vertex = next;
        for (int v = 0; v < kV; ++v) acc[v] = _mm256_mul_ps(w, _mm256_load_ps(rows[i] + 8 * v));
      } else {
        for (int v = 0; v < kV; ++v)
          acc[v] = _mm256_fmadd_ps(w, _mm256_load_ps(rows[i] + 8 * v), acc[v]);
      }
    }
    float* row = buf + (static_cast<int64_t>(vertex) - lo) * (kV * 8);
    for (int v = 0; v < kV; ++v)
      _mm256_storeu_ps(row + 8 * v, _mm256_add_ps(acc[v], _mm256_loadu_ps(row + 8 * v)));
  }
}

struct FusedPass {
  const float* blurred_g = nullptr;  // null on the first pass: Q0 = softmax(-unary)
  const float* blurred_b = nullptr;
  float* buf_g = nullptr;  // null on the last pass: write Q to `out` instead
  float* buf_b = nullptr;
  float* out = nullptr;
  const float* scores = nullptr;  // the op's input [n, channels] (see CrfScores)
  int64_t n = 0;
  int channels = 0;
};

// Pixels per block of the fused pass. Each pass over a block (slice, then softmax, then
// scatter) has no dependencies from one pixel to the next, so the core overlaps the long
// latency chains (gathers, exp, the horizontal max and sum) of many pixels; one pixel at a
// time, those chains ran nearly serially. The block's rows stay in L1.
constexpr int kFusedBlock = 16;

// Row p of the scores in kV vectors of 8 lanes, as the fused pass uses them: clip(p, clip, 1)
// for probabilities (the softmax multiplies by it rather than adding log p: one exp instead
// of a log and an exp), x for logits, -x for unary; lanes past `channels` hold 0 for
// probabilities and -inf otherwise. The last vector reads past the row into the next one
// (masked off) except on the last pixel, which loads only its own lanes.
template <CrfScores kKind, int kV>
KSEG_WIDE_TARGET __attribute__((always_inline)) inline void LoadScores8(const FusedPass& pass,
                                                                        int64_t p,
                                                                        __m256i tail_lanes,
                                                                        __m256* x) {
  const float* in = pass.scores + p * pass.channels;
  for (int v = 0; v < kV - 1; ++v) x[v] = _mm256_loadu_ps(in + 8 * v);
  const float* tail = in + 8 * (kV - 1);
  x[kV - 1] = p + 1 < pass.n ? _mm256_loadu_ps(tail) : _mm256_maskload_ps(tail, tail_lanes);
  const __m256 keep = _mm256_castsi256_ps(tail_lanes);
  if constexpr (kKind == CrfScores::kProbabilities) {
    const __m256 lo = _mm256_set1_ps(static_cast<float>(kProbabilityClip));
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int v = 0; v < kV; ++v) x[v] = _mm256_min_ps(_mm256_max_ps(x[v], lo), one);
    x[kV - 1] = _mm256_and_ps(x[kV - 1], keep);
  } else {
    if constexpr (kKind == CrfScores::kUnary)
      for (int v = 0; v < kV; ++v) x[v] = _mm256_xor_ps(x[v], _mm256_set1_ps(-0.0f));
    x[kV - 1] =
        _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()), x[kV - 1], keep);
  }
}

// One pass over the pixels [begin, end) of range `part`: Q = softmax(pairwise - unary), with
// pairwise = 0 on the first pass, scattered into the splat buffers (or written out).
template <int kC, CrfScores kKind>
KSEG_WIDE_TARGET void FusedRange8(const UpdateArgs<float>& a, const FusedPass& pass,
                                  const PartBuffers& pg, const PartBuffers& pb, const float* pre_g,
                                  const float* pre_b, int64_t part, int64_t begin, int64_t end) {
  constexpr int kV = kC / 8;
  constexpr bool kProduct = kKind == CrfScores::kProbabilities;
  const bool dense_crf_dims = a.gaussian->feature_dim() == 2 && a.bilateral->feature_dim() == 5;
  float* buf_g = pass.buf_g ? pass.buf_g + pg.start[part] * kC : nullptr;
  float* buf_b = pass.buf_b ? pass.buf_b + pb.start[part] * kC : nullptr;
  const __m256i tail_lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(pass.channels - 8 * (kV - 1)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  alignas(32) float rows[kFusedBlock][kC];  // the exponent, then the softmax numerator
  float inv_sum[kFusedBlock];
  for (int64_t p0 = begin; p0 < end; p0 += kFusedBlock) {
    const int count = static_cast<int>(std::min<int64_t>(kFusedBlock, end - p0));
    // Exponents: pairwise + log-domain scores, or pairwise alone (probabilities; padding
    // lanes -inf so that they do not set the maximum).
    for (int i = 0; i < count; ++i) {
      const int64_t p = p0 + i;
      __m256 acc[kV];
      PairwiseRow8<kV>(a, dense_crf_dims, pass.blurred_g, pass.blurred_b, p, acc);
      if constexpr (kProduct) {
        acc[kV - 1] = _mm256_blendv_ps(neg_inf, acc[kV - 1], _mm256_castsi256_ps(tail_lanes));
      } else {
        __m256 x[kV];
        LoadScores8<kKind, kV>(pass, p, tail_lanes, x);
        for (int v = 0; v < kV; ++v) acc[v] = _mm256_add_ps(acc[v], x[v]);
      }
      for (int v = 0; v < kV; ++v) _mm256_store_ps(rows[i] + 8 * v, acc[v]);
    }
    // Softmax numerators exp(exponent - max) (times clip(p) for probabilities) and 1 / sum.
    for (int i = 0; i < count; ++i) {
      __m256 x[kV];
      __m256 mx = neg_inf;
      for (int v = 0; v < kV; ++v) {
        x[v] = _mm256_load_ps(rows[i] + 8 * v);
        mx = _mm256_max_ps(mx, x[v]);
      }
      __m256 prob[kV];
      if constexpr (kProduct) LoadScores8<kKind, kV>(pass, p0 + i, tail_lanes, prob);
      const __m256 m = _mm256_set1_ps(HorizontalMax(mx));
      __m256 sum = _mm256_setzero_ps();
      for (int v = 0; v < kV; ++v) {
        x[v] = ExpNonPositive8(_mm256_sub_ps(x[v], m));
        if constexpr (kProduct) x[v] = _mm256_mul_ps(x[v], prob[v]);
        sum = _mm256_add_ps(sum, x[v]);
        _mm256_store_ps(rows[i] + 8 * v, x[v]);
      }
      inv_sum[i] = 1.0f / HorizontalSum(sum);
    }
    if (buf_g == nullptr) {
      // Rows of Q go out with whole-vector stores, the padding lanes spilling into the next
      // rows, which are written next; only where the spill would leave the range, a copy.
      const int64_t range_end = end * pass.channels;
      for (int i = 0; i < count; ++i) {
        const __m256 iv = _mm256_set1_ps(inv_sum[i]);
        float* dst = pass.out + (p0 + i) * pass.channels;
        if ((p0 + i) * pass.channels + kC <= range_end) {
          for (int v = 0; v < kV; ++v)
            _mm256_storeu_ps(dst + 8 * v, _mm256_mul_ps(_mm256_load_ps(rows[i] + 8 * v), iv));
        } else {
          for (int v = 0; v < kV; ++v)
            _mm256_store_ps(rows[i] + 8 * v, _mm256_mul_ps(_mm256_load_ps(rows[i] + 8 * v), iv));
          std::memcpy(dst, rows[i], sizeof(float) * pass.channels);
        }
      }
      continue;
    }
    // Scatter Q = numerator / sum, pre-scaled by the normaliser, into both splat buffers.
    float scale_g[kFusedBlock], scale_b[kFusedBlock];
    for (int i = 0; i < count; ++i) {
      scale_g[i] = inv_sum[i] * (pre_g ? pre_g[p0 + i] : 1.0f);
      scale_b[i] = inv_sum[i] * (pre_b ? pre_b[p0 + i] : 1.0f);
    }
    if (dense_crf_dims)
      ScatterRuns8<3, kV>(*a.gaussian, p0, count, rows, scale_g, buf_g, pg.lo[part]);
    else
      ScatterRuns8<0, kV>(*a.gaussian, p0, count, rows, scale_g, buf_g, pg.lo[part]);
    for (int i = 0; i < count; ++i) {
      __m256 x[kV];
      for (int v = 0; v < kV; ++v) x[v] = _mm256_load_ps(rows[i] + 8 * v);
      if (dense_crf_dims)
        ScatterPoint8<6, kV>(*a.bilateral, p0 + i, x, scale_b[i], buf_b, pb.lo[part]);
      else
        ScatterPoint8<0, kV>(*a.bilateral, p0 + i, x, scale_b[i], buf_b, pb.lo[part]);
    }
  }
}
#endif

template <int kC, typename T>
KSEG_WIDE_TARGET void UpdateRangeWide(const UpdateArgs<T>& a, int64_t begin, int64_t end) {
#if KSEG_WIDE_KERNELS
  if constexpr (std::is_same<T, float>::value && kC > 0) {
    UpdateRange8<kC>(a, begin, end);
    return;
  }
#endif
  UpdateRange<kC>(a, begin, end);
}

template <int kC, typename T>
KSEG_WIDE_TARGET void SplatRangeWide(const Permutohedral<T>& lattice,
                                     const typename Permutohedral<T>::SplatArgs& a, int64_t begin,
                                     int64_t end) {
#if KSEG_WIDE_KERNELS
  if constexpr (std::is_same<T, float>::value && kC > 0) {
    SplatRange8<kC>(lattice, a, begin, end);
    return;
  }
#endif
  lattice.template SplatRange<kC>(a, begin, end);
}

template <int kC, typename T>
typename Permutohedral<T>::SplatRangeFn WideSplat(bool wide) {
  return wide ? &SplatRangeWide<kC, T> : nullptr;
}

// Mean-field buffers, kept between calls: the unary in padded rows, Q in padded rows (unfused
// path), the per-range splat buffers (fused path).
template <typename T>
struct CrfScratchBuffers {
  std::vector<T> unary, q_work, parts;
};

// Everything one image's mean field reads and writes (MeanField's arguments).
template <typename T>
struct MeanFieldInputs {
  const DenseCrfParams* params = nullptr;
  const T* scores = nullptr;  // [n, channels], as params->scores says
  int64_t n = 0;
  int channels = 0;
  const Permutohedral<T>* gaussian = nullptr;
  const Permutohedral<T>* bilateral = nullptr;
  const T* pre_g = nullptr;  // D^-1/2 applied before filtering (symmetric), else null
  const T* pre_b = nullptr;
  const T* norm_g = nullptr;  // applied after filtering
  const T* norm_b = nullptr;
  const PartBuffers* fused_g = nullptr;  // set (with fused_b): run the fused mean field
  const PartBuffers* fused_b = nullptr;
  CrfScratchBuffers<T>* buffers = nullptr;
  FilterWorkspace<T>* ws_g = nullptr;
  FilterWorkspace<T>* ws_b = nullptr;
  bool wide = false;   // the AVX2 + FMA kernels may run (UseWideKernels)
  T* q_out = nullptr;  // [n, channels]
  // Polled between iterations: a cancelled call stops early (the caller reports it).
  const RunControl* control = nullptr;
  bool Cancelled() const { return control != nullptr && control->Cancelled(); }
};

// Runs the whole mean field fused (CanFuse must hold) on the op's scores [n, channels];
// writes Q to q_out [n, channels].
template <int kC, typename T>
void FusedMeanField(const MeanFieldInputs<T>& in, const ParallelFor& parallel_for) {
#if KSEG_WIDE_KERNELS
  if constexpr (std::is_same<T, float>::value && kC > 0) {
    const DenseCrfParams& params = *in.params;
    const PartBuffers& pg = *in.fused_g;
    const PartBuffers& pb = *in.fused_b;
    const int64_t n = in.n;
    const T* pre_g = in.pre_g;
    const T* pre_b = in.pre_b;
    std::vector<T>* part_buffer = &in.buffers->parts;
    const int64_t parts = static_cast<int64_t>(pg.lo.size());
    part_buffer->resize((pg.total_rows + pb.total_rows) * kC);
    float* bufs_g = part_buffer->data();
    float* bufs_b = bufs_g + pg.total_rows * kC;
    const UpdateArgs<float> args{nullptr,
                                 nullptr,
                                 in.gaussian,
                                 in.bilateral,
                                 nullptr,
                                 nullptr,
                                 in.norm_g,
                                 in.norm_b,
                                 float(params.gaussian_compat),
                                 float(params.bilateral_compat),
                                 kC};
    auto range = &FusedRange8<kC, CrfScores::kUnary>;
    if (params.scores == CrfScores::kProbabilities)
      range = &FusedRange8<kC, CrfScores::kProbabilities>;
    else if (params.scores == CrfScores::kLogits)
      range = &FusedRange8<kC, CrfScores::kLogits>;
    FusedPass pass;
    pass.out = in.q_out;
    pass.scores = in.scores;
    pass.n = n;
    pass.channels = in.channels;
    for (int it = 0; it <= params.iterations; ++it) {
      if (in.Cancelled()) return;
      const bool last = it == params.iterations;
      pass.buf_g = last ? nullptr : bufs_g;
      pass.buf_b = last ? nullptr : bufs_b;
      parallel_for(parts, 60.0 * kC * n / parts, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          if (!last) {
            std::fill(bufs_g + pg.start[i] * kC, bufs_g + (pg.start[i] + pg.rows[i]) * kC, 0.0f);
            std::fill(bufs_b + pb.start[i] * kC, bufs_b + (pb.start[i] + pb.rows[i]) * kC, 0.0f);
          }
          range(args, pass, pg, pb, pre_g, pre_b, i, n * i / parts, n * (i + 1) / parts);
        }
      });
      if (!last) {
        pass.blurred_g = ReduceAndBlur(*in.gaussian, pg, bufs_g, kC, in.ws_g, parallel_for);
        pass.blurred_b = ReduceAndBlur(*in.bilateral, pb, bufs_b, kC, in.ws_b, parallel_for);
      }
    }
  }
#endif
}

// Q0 = softmax(-unary), then `iterations` mean-field updates; the result goes to q_out
// [n, channels]. The unary comes from `scores` as params.scores says. Fused (see
// FusedMeanField) where possible; otherwise each update splats and blurs Q (in q_work, padded
// rows) in both lattices, then one pass over the pixels slices both kernels and applies the
// softmax, so the pairwise term never goes through memory.
template <int kC, typename T>
void MeanField(const MeanFieldInputs<T>& in, const ParallelFor& parallel_for) {
  if (in.fused_g != nullptr) {
    FusedMeanField<kC>(in, parallel_for);
    return;
  }
  const DenseCrfParams& params = *in.params;
  const T* scores = in.scores;
  const int64_t n = in.n;
  const int channels = in.channels;
  const Permutohedral<T>& gaussian = *in.gaussian;
  const Permutohedral<T>& bilateral = *in.bilateral;
  CrfScratchBuffers<T>* buffers = in.buffers;
  const int cp = kC > 0 ? kC : lattice::PaddedChannels(channels);
  const T compat_g = T(params.gaussian_compat), compat_b = T(params.bilateral_compat);
  // Unary in padded rows; +inf in the padding makes those lanes' probabilities exactly 0.
  std::vector<T>& unary_padded = buffers->unary;
  unary_padded.resize(n * cp);
  const CrfScores kind = params.scores;
  parallel_for(n, 20.0 * cp, [&](int64_t begin, int64_t end) {
#if KSEG_WIDE_KERNELS
    if constexpr (std::is_same<T, float>::value && kC > 0) {
      if (in.wide) return UnaryRange8<kC>(scores, channels, kind, begin, end, unary_padded.data());
    }
#endif
    for (int64_t p = begin; p < end; ++p) {
      const T* x = scores + p * channels;
      T* row = unary_padded.data() + p * cp;
      if (kind == CrfScores::kProbabilities) {  // the reference's -log(clip(p, 1e-5, 1))
        for (int c = 0; c < channels; ++c)
          row[c] = -std::log(std::min(std::max(x[c], T(kProbabilityClip)), T(1)));
      } else if (kind == CrfScores::kLogits) {
        for (int c = 0; c < channels; ++c) row[c] = -x[c];
      } else {
        for (int c = 0; c < channels; ++c) row[c] = x[c];
      }
      for (int c = channels; c < cp; ++c) row[c] = std::numeric_limits<T>::infinity();
    }
  });
  std::vector<T>& q_work_buffer = buffers->q_work;
  q_work_buffer.resize(n * cp);
  T* q_work = q_work_buffer.data();
  const bool wide = in.wide;
  for (int it = 0; it <= params.iterations; ++it) {
    if (in.Cancelled()) return;
    UpdateArgs<T> args{unary_padded.data(), q_work,    &gaussian, &bilateral, nullptr, nullptr,
                       in.norm_g,           in.norm_b, compat_g,  compat_b,   cp};
    if (it > 0) {
      args.blurred_g = gaussian.SplatBlur(q_work, cp, cp, in.pre_g, false, in.ws_g, parallel_for,
                                          WideSplat<kC, T>(wide));
      args.blurred_b = bilateral.SplatBlur(q_work, cp, cp, in.pre_b, false, in.ws_b, parallel_for,
                                           WideSplat<kC, T>(wide));
    }
    parallel_for(n, 40.0 * cp, [&](int64_t begin, int64_t end) {
      if (wide)
        UpdateRangeWide<kC>(args, begin, end);
      else
        UpdateRange<kC>(args, begin, end);
    });
  }
  parallel_for(n, 2.0 * channels, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      std::copy(q_work + p * cp, q_work + p * cp + channels, in.q_out + p * channels);
  });
}

// The one dispatch from the channel count to the mean field compiled for it: rows padded to 8,
// 16, 24 or 32 channels get a fixed-width instance (unrolled, kept in registers), wider rows the
// generic one.
template <typename T>
void RunMeanField(const MeanFieldInputs<T>& in, const ParallelFor& parallel_for) {
  using Fn = void (*)(const MeanFieldInputs<T>&, const ParallelFor&);
  static constexpr Fn kByWidth[] = {&MeanField<0, T>, &MeanField<8, T>, &MeanField<16, T>,
                                    &MeanField<24, T>, &MeanField<32, T>};
  const int cp = lattice::PaddedChannels(in.channels);
  kByWidth[cp <= 32 ? cp / 8 : 0](in, parallel_for);
}

// Buffers and lattices of one DenseCrfCpu call. The last one used is kept for the next call
// while it fits the cache's cap (see scratch_cache.h).
template <typename T>
struct CrfScratch {
  std::vector<T> gaussian_features, bilateral_features, ones, norm_g, norm_b;
  CrfScratchBuffers<T> buffers;
  Permutohedral<T> gaussian, bilateral;
  FilterWorkspace<T> workspace, ws_g, ws_b;

  // Everything this scratch keeps allocated.
  int64_t CapacityBytes() const {
    size_t values = gaussian_features.capacity() + bilateral_features.capacity() + ones.capacity() +
                    norm_g.capacity() + norm_b.capacity() + buffers.unary.capacity() +
                    buffers.q_work.capacity() + buffers.parts.capacity();
    return static_cast<int64_t>(values * sizeof(T)) + gaussian.CapacityBytes() +
           bilateral.CapacityBytes() + workspace.CapacityBytes() + ws_g.CapacityBytes() +
           ws_b.CapacityBytes();
  }
};

template <typename T>
ScratchCache<CrfScratch<T>>& GetScratchCache() {
  static ScratchCache<CrfScratch<T>>* cache = new ScratchCache<CrfScratch<T>>();
  return *cache;
}

// Host bytes one DenseCrfCpu call needs for images of n pixels and rows of cp padded channels
// (t = sizeof(T)), before its lattices are built:
//   t n (7 features + 3 normalisers + 2 cp unary and Q rows)
//   + Permutohedral::PointBytes(n, 2) + Permutohedral::PointBytes(n, 5).
template <typename T>
int64_t CrfPointBytes(int64_t n, int cp) {
  return static_cast<int64_t>(sizeof(T)) * n * (7 + 3 + 2 * int64_t{cp}) +
         Permutohedral<T>::PointBytes(n, 2) + Permutohedral<T>::PointBytes(n, 5);
}
// Once built: VertexBytes(cp) of both lattices, the filter of ones (2 (m + 1) t each) and the
// fused mean field's range buffers (`part_rows` rows of cp values).
template <typename T>
int64_t CrfVertexBytes(const Permutohedral<T>& gaussian, const Permutohedral<T>& bilateral, int cp,
                       int64_t part_rows) {
  const int64_t t = sizeof(T);
  return gaussian.VertexBytes(cp) + bilateral.VertexBytes(cp) +
         2 * t * (gaussian.num_vertices() + bilateral.num_vertices() + 2) + part_rows * cp * t;
}

inline std::string CrfSizes(int64_t batch, int64_t h, int64_t w, int channels) {
  return "scores.shape=[" + std::to_string(batch) + ", " + std::to_string(h) + ", " +
         std::to_string(w) + ", " + std::to_string(channels) + "]";
}

// Dense CRF inference for `batch` images: scores [batch, h, w, channels] (as params.scores
// says), image [batch, h, w, 3] RGB in 0..255 -> q [batch, h, w, channels]. Returns an empty
// string, or why the input is unusable, in Keras's "... Received: name=value" wording. The caller
// checks shapes and that every value is finite. allow_wide = false keeps to the baseline kernels
// (tests compare both). Results do not depend on how parallel_for cuts ranges.
template <typename T>
std::string DenseCrfCpu(const DenseCrfParams& params, const T* scores, const T* image,
                        int64_t batch, int64_t h, int64_t w, int channels, T* q,
                        const ParallelFor& parallel_for, bool allow_wide = true,
                        RunControl* control = nullptr) {
  std::string error = CrfIterationsError(params.iterations);
  if (!error.empty()) return error;
  const int64_t n = h * w;
  const int cp = lattice::PaddedChannels(channels);
  const int64_t point_bytes = CrfPointBytes<T>(n, cp);
  error = CheckBudget(control, point_bytes, "the dense CRF", CrfSizes(batch, h, w, channels));
  if (!error.empty()) return error;
  std::unique_ptr<CrfScratch<T>> scratch = GetScratchCache<T>().Take();
  std::vector<T>& gaussian_features = scratch->gaussian_features;
  std::vector<T>& bilateral_features = scratch->bilateral_features;
  gaussian_features.resize(n * 2);
  bilateral_features.resize(n * 5);
  std::vector<T>& ones = scratch->ones;
  std::vector<T>& norm_g = scratch->norm_g;
  std::vector<T>& norm_b = scratch->norm_b;
  norm_g.resize(n);
  norm_b.resize(n);
  Permutohedral<T>& gaussian = scratch->gaussian;
  Permutohedral<T>& bilateral = scratch->bilateral;
  FilterWorkspace<T>& workspace = scratch->workspace;
  FilterWorkspace<T>& ws_g = scratch->ws_g;
  FilterWorkspace<T>& ws_b = scratch->ws_b;
  struct GiveBack {
    std::unique_ptr<CrfScratch<T>>& scratch;
    ~GiveBack() { GetScratchCache<T>().Give(std::move(scratch)); }
  } give_back{scratch};
  const bool symmetric = params.normalization == CrfNormalization::kSymmetric;
  const bool wide = allow_wide && UseWideKernels<T>();

  for (int64_t b = 0; b < batch; ++b) {
    if (control != nullptr && control->Cancelled()) return CancelledError(control, "the dense CRF");
    const T* img = image + b * n * 3;
    const T* un = scores + b * n * channels;
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
    error = gaussian.Build(gaussian_features.data(), n, 2, 2, parallel_for,
                           /*with_splat_lists=*/false);
    if (!error.empty()) return CrfLatticeError(params, /*bilateral=*/false, b, error);
    error = bilateral.Build(bilateral_features.data(), n, 5, 5, parallel_for,
                            /*with_splat_lists=*/false);
    if (!error.empty()) return CrfLatticeError(params, /*bilateral=*/true, b, error);

    // The fused mean field splats by scatter into per-range buffers; otherwise the lattices
    // need their gather lists.
    const int64_t parts = FusedParts(n);
    const PartBuffers pg = MakePartBuffers(gaussian, parts, parallel_for);
    const PartBuffers pb = MakePartBuffers(bilateral, parts, parallel_for);
    const bool fused = CanFuse<T>(cp, pg, pb, wide);
    error = CheckBudget(control,
                        point_bytes + CrfVertexBytes(gaussian, bilateral, cp,
                                                     fused ? pg.total_rows + pb.total_rows : 0),
                        "the dense CRF",
                        CrfSizes(batch, h, w, channels) + " (lattice vertices: gaussian=" +
                            std::to_string(gaussian.num_vertices()) +
                            ", bilateral=" + std::to_string(bilateral.num_vertices()) + ")");
    if (!error.empty()) return error;
    const PartBuffers* fused_g = fused ? &pg : nullptr;
    const PartBuffers* fused_b = fused ? &pb : nullptr;
    // Normalisers from the filter of ones: D^-1/2 (symmetric) or D^-1 (after).
    if (fused) {
      FilterOnesByScatter(gaussian, pg, &scratch->buffers.parts, &workspace, parallel_for,
                          norm_g.data());
      FilterOnesByScatter(bilateral, pb, &scratch->buffers.parts, &workspace, parallel_for,
                          norm_b.data());
    } else {
      ones.assign(n, T(1));
      gaussian.BuildSplatLists(parallel_for);
      bilateral.BuildSplatLists(parallel_for);
      gaussian.Filter(ones.data(), 1, 1, nullptr, nullptr, T(1), false, false, norm_g.data(), 1,
                      &workspace, parallel_for);
      bilateral.Filter(ones.data(), 1, 1, nullptr, nullptr, T(1), false, false, norm_b.data(), 1,
                       &workspace, parallel_for);
    }
    parallel_for(n, 30, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        norm_g[p] =
            symmetric ? T(1) / std::sqrt(norm_g[p] + T(1e-20)) : T(1) / (norm_g[p] + T(1e-20));
        norm_b[p] =
            symmetric ? T(1) / std::sqrt(norm_b[p] + T(1e-20)) : T(1) / (norm_b[p] + T(1e-20));
      }
    });
    const T* pre_g = symmetric ? norm_g.data() : nullptr;
    const T* pre_b = symmetric ? norm_b.data() : nullptr;

    MeanFieldInputs<T> in;
    in.params = &params;
    in.scores = un;
    in.n = n;
    in.channels = channels;
    in.gaussian = &gaussian;
    in.bilateral = &bilateral;
    in.pre_g = pre_g;
    in.pre_b = pre_b;
    in.norm_g = norm_g.data();
    in.norm_b = norm_b.data();
    in.fused_g = fused_g;
    in.fused_b = fused_b;
    in.buffers = &scratch->buffers;
    in.ws_g = &ws_g;
    in.ws_b = &ws_b;
    in.wide = wide;
    in.q_out = q + b * n * channels;
    in.control = control;
    RunMeanField(in, parallel_for);
    if (in.Cancelled()) return CancelledError(control, "the dense CRF");
  }
  return std::string();
}

}  // namespace crf
}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_DENSE_CRF_H_
