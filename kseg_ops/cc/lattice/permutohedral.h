// Permutohedral lattice (Adams, Baek & Davis 2010) for high-dimensional Gaussian filtering, with
// the conventions of Kraehenbuehl & Koltun's dense CRF code so that results agree with it.
// TensorFlow-free and header-only; templated on the value type T (float or double).
//
// Exact math (a GPU implementation must reproduce it step by step):
//   n points with d-dimensional features f (the caller has already divided by the std devs).
//   1. Scaling: s_i = sqrt(2/3) * (d + 1) / sqrt((i + 1) * (i + 2)), i = 0..d-1.
//   2. Elevation onto the plane sum(x) = 0 in R^{d+1}:
//        acc = 0; for j = d..1: c = f[j-1] * s[j-1]; x[j] = acc - j * c; acc += c;  x[0] = acc.
//   3. Nearest remainder-0 point: r[i] = rint(x[i] / (d + 1)) * (d + 1) (round half to even),
//      sum = sum_i rint(x[i] / (d + 1)).
//   4. Rank: for i < j, with e = x - r: if e[i] < e[j] then rank[i] += 1 else rank[j] += 1.
//      Then rank[i] += sum; if rank[i] < 0 { rank[i] += d+1; r[i] += d+1 };
//      if rank[i] >= d+1 { rank[i] -= d+1; r[i] -= d+1 }.
//   5. Barycentric weights b[0..d+1] = 0; for i: v = (x[i] - r[i]) / (d + 1);
//      b[d - rank[i]] += v; b[d + 1 - rank[i]] -= v; then b[0] += 1 + b[d + 1].
//   6. Vertex k = 0..d of the enclosing simplex has key[i] = r[i] + (rank[i] <= d - k ? k : k - d -
//   1)
//      for i = 0..d-1 (the last coordinate follows from sum = 0); it gets weight b[k].
//   7. Splat: V[v] = sum over (point p, vertex k) landing on v of b_p[k] * in[p].
//   8. Blur along axes j = 0..d in that order (d..0 for the transposed filter):
//        V'[v] = V[v] + 0.5 * (V[n1] + V[n2]), n1 = key - 1 except n1[j] = key[j] + d,
//        n2 = key + 1 except n2[j] = key[j] - d (coordinates beyond d-1 are dropped);
//        a neighbour that is not in the lattice contributes 0.
//   9. Slice: out[p] = alpha * sum_k b_p[k] * V[vertex k of p], alpha = 1 / (1 + 2^-d).
// Every blur axis matrix is symmetric, so the transposed filter is steps 7-9 with the blur order
// reversed; the filter of a vector of ones gives the normaliser D = L 1 used by the dense CRF.
//
// Work is spread with a caller-supplied `ParallelFor(total, cost_per_item, fn(begin, end))`; each
// output element is computed by exactly one call in a fixed order, so results do not depend on
// the number of threads.
#ifndef KSEG_OPS_CC_LATTICE_PERMUTOHEDRAL_H_
#define KSEG_OPS_CC_LATTICE_PERMUTOHEDRAL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "kseg_ops/cc/common/cpu_features.h"
#include "kseg_ops/cc/common/parallel_for.h"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && \
    !defined(KSEG_LATTICE_SCALAR_ONLY)
#include <immintrin.h>
#define KSEG_LATTICE_AVX2 1
#endif

namespace kseg {
namespace lattice {

// Largest supported feature dimension (the dense CRF needs 5).
constexpr int kMaxFeatureDim = 16;

// Bound on |feature * scale| per axis that keeps every lattice key inside int32 (see Build).
// float32 keeps about 24 bits: beyond 2^22 the embedding's fractions (which decide the simplex)
// are lost, so float32 features are held to a tighter bound than float64 ones.
template <typename T>
inline T ElevatedCoordinateLimit(int feature_dim) {
  const T bound = sizeof(T) < sizeof(double) ? T(1 << 22) : T(1 << 30);
  return bound / T(feature_dim + 1);
}

// total items, estimated cost of one item in cycles, fn(begin, end) (common/parallel_for.h).
using ::kseg::ParallelFor;
using ::kseg::SerialFor;

// Point ranges hashed in parallel while building a lattice (a constant, so that the vertex
// numbering does not depend on the number of threads).
constexpr int64_t kBuildChunks = 8;

// Channels padded to a multiple of this so inner loops vectorise without remainders.
constexpr int kChannelBlock = 8;
inline int PaddedChannels(int channels) {
  return (channels + kChannelBlock - 1) / kChannelBlock * kChannelBlock;
}

namespace internal {

// Open-addressing hash set of integer keys of length `dim`, giving each key a dense index.
// kDim > 0 fixes the key length at compile time (inlined comparisons).

#if KSEG_LATTICE_AVX2
// Whether the CPU runs AVX2 (the library itself targets x86-64-v2).
inline bool HasAvx2() { return ::kseg::cpu::HasAvx2(); }

// Steps 1-4 of Build (elevation, nearest remainder-0 point, ranks, barycentric weights) for 8
// float points at a time, one point per lane. Every lane computes exactly the operations of the
// scalar loop in Build, in the same order (no FMA contraction: AVX2 only), so the lattice is
// bit-for-bit the one the scalar code builds. Points whose features are out of range are
// flagged in `overflow` (their outputs are not used).
template <int kD>
__attribute__((target("avx2"))) void EmbedPoints8(const float* features, int64_t stride, int64_t p0,
                                                  const float* scale, float limit,
                                                  float* barycentric, int32_t* rem0, uint8_t* rank,
                                                  uint8_t* overflow) {
  constexpr int d = kD, d1 = kD + 1;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i base = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(stride)));
  const float* f0 = features + p0 * stride;
  const __m256 sign = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(limit);
  __m256 x[d1];
  __m256 acc = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();
  for (int j = d; j > 0; --j) {
    const __m256 f = _mm256_i32gather_ps(f0 + (j - 1), base, 4);
    const __m256 c = _mm256_mul_ps(f, _mm256_set1_ps(scale[j - 1]));
    // !(|c| < limit): also true for NaN.
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_andnot_ps(sign, c), lim, _CMP_NLT_UQ));
    x[j] = _mm256_sub_ps(acc, _mm256_mul_ps(_mm256_set1_ps(float(j)), c));
    acc = _mm256_add_ps(acc, c);
  }
  x[0] = acc;
  const int bad_lanes = _mm256_movemask_ps(bad);
  if (bad_lanes) {
    for (int l = 0; l < 8; ++l) overflow[p0 + l] = (bad_lanes >> l) & 1;
    for (int i = 0; i <= d; ++i) x[i] = _mm256_andnot_ps(bad, x[i]);  // keep the rest defined
  }
  const __m256 inv_d1 = _mm256_set1_ps(1.0f / float(d1));
  const __m256i vd1 = _mm256_set1_epi32(d1);
  __m256i r[d1], rk[d1];
  __m256 e[d1];
  __m256i sum = _mm256_setzero_si256();
  for (int i = 0; i <= d; ++i) {
    const __m256i v = _mm256_cvtps_epi32(_mm256_round_ps(
        _mm256_mul_ps(x[i], inv_d1), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    r[i] = _mm256_mullo_epi32(v, vd1);
    sum = _mm256_add_epi32(sum, v);
    rk[i] = _mm256_setzero_si256();
  }
  for (int i = 0; i <= d; ++i) e[i] = _mm256_sub_ps(x[i], _mm256_cvtepi32_ps(r[i]));
  const __m256i one = _mm256_set1_epi32(1);
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const __m256i less = _mm256_castps_si256(_mm256_cmp_ps(e[i], e[j], _CMP_LT_OQ));  // -1 or 0
      rk[i] = _mm256_sub_epi32(rk[i], less);
      rk[j] = _mm256_add_epi32(rk[j], _mm256_add_epi32(one, less));
    }
  }
  const __m256i minus_one = _mm256_set1_epi32(-1);
  for (int i = 0; i <= d; ++i) {
    rk[i] = _mm256_add_epi32(rk[i], sum);
    const __m256i up = _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), rk[i]), vd1);
    const __m256i down =
        _mm256_and_si256(_mm256_cmpgt_epi32(rk[i], _mm256_add_epi32(vd1, minus_one)), vd1);
    const __m256i shift = _mm256_sub_epi32(up, down);
    rk[i] = _mm256_add_epi32(rk[i], shift);
    r[i] = _mm256_add_epi32(r[i], shift);
  }
  // Ranks outside 0..d (rounding lost the elevated coordinates' fractions) would index out of
  // bounds below and in the vertex keys: flag the point instead.
  __m256i bad_rank = _mm256_setzero_si256();
  const __m256i vd = _mm256_set1_epi32(d);
  for (int i = 0; i <= d; ++i)
    bad_rank =
        _mm256_or_si256(bad_rank, _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), rk[i]),
                                                  _mm256_cmpgt_epi32(rk[i], vd)));
  const int bad_rank_lanes = _mm256_movemask_ps(_mm256_castsi256_ps(bad_rank));
  if (bad_rank_lanes) {
    for (int l = 0; l < 8; ++l)
      if ((bad_rank_lanes >> l) & 1) overflow[p0 + l] = 1;
    for (int i = 0; i <= d; ++i) rk[i] = _mm256_andnot_si256(bad_rank, rk[i]);
  }
  // b[d - rk_i] += v_i and b[d + 1 - rk_i] -= v_i, ranks being a permutation of 0..d: with
  // at[j] the v of rank d - j, b_0 = at[0] + (1 - at[d]) and b_j = at[j] - at[j - 1].
  __m256 at[d1];
  for (int j = 0; j <= d; ++j) at[j] = _mm256_setzero_ps();
  for (int i = 0; i <= d; ++i) {
    const __m256 v = _mm256_mul_ps(_mm256_sub_ps(x[i], _mm256_cvtepi32_ps(r[i])), inv_d1);
    for (int j = 0; j <= d; ++j)
      at[j] = _mm256_blendv_ps(
          at[j], v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(rk[i], _mm256_set1_epi32(d - j))));
  }
  alignas(32) float b[d1][8];
  const __m256 last = _mm256_sub_ps(_mm256_setzero_ps(), at[d]);
  _mm256_store_ps(b[0], _mm256_add_ps(at[0], _mm256_add_ps(_mm256_set1_ps(1.0f), last)));
  for (int j = 1; j <= d; ++j) _mm256_store_ps(b[j], _mm256_sub_ps(at[j], at[j - 1]));
  alignas(32) int32_t rr[d1][8], kk[d1][8];
  for (int i = 0; i <= d; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(rr[i]), r[i]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(kk[i]), rk[i]);
  }
  for (int l = 0; l < 8; ++l) {
    const int64_t p = p0 + l;
    for (int k = 0; k <= d; ++k) barycentric[p * d1 + k] = b[k][l];
    for (int i = 0; i < d; ++i) rem0[p * d + i] = rr[i][l];
    for (int i = 0; i <= d; ++i) rank[p * d1 + i] = static_cast<uint8_t>(kk[i][l]);
  }
}
#endif

template <int kDim>
class KeyTable {
 public:
  KeyTable(int dim, int64_t expected) : dim_(kDim > 0 ? kDim : dim) {
    int64_t cap = 64;
    while (cap < 2 * expected) cap <<= 1;
    slots_.assign(cap, -1);
    mask_ = cap - 1;
    keys_.reserve(static_cast<size_t>(expected) * dim);
  }
  int64_t size() const { return static_cast<int64_t>(keys_.size()) / dim_; }
  void swap(KeyTable& other) {
    std::swap(dim_, other.dim_);
    std::swap(mask_, other.mask_);
    slots_.swap(other.slots_);
    keys_.swap(other.keys_);
  }
  const int32_t* key(int64_t index) const { return keys_.data() + index * dim_; }

  static uint64_t Hash(const int32_t* key, int runtime_dim) {
    // Independent products (no serial multiply chain), then one mixing round.
    static constexpr uint64_t kMul[kMaxFeatureDim] = {
        0x9E3779B97F4A7C15ull, 0xBF58476D1CE4E5B9ull, 0x94D049BB133111EBull, 0xD6E8FEB86659FD93ull,
        0xA0761D6478BD642Full, 0xE7037ED1A0B428DBull, 0x8EBC6AF09C88C6E3ull, 0x589965CC75374CC3ull,
        0x1D8E4E27C47D124Full, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull, 0xFF51AFD7ED558CCDull,
        0xC4CEB9FE1A85EC53ull, 0x87C37B91114253D5ull, 0x4CF5AD432745937Full, 0x52DCE729DA3ED2B9ull};
    const int dim = kDim > 0 ? kDim : runtime_dim;
    uint64_t h = 0;
    for (int i = 0; i < dim; ++i)
      h += static_cast<uint64_t>(static_cast<uint32_t>(key[i])) * kMul[i];
    h ^= h >> 32;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
  }

  // Index of `key`, inserting it when absent.
  int32_t FindOrInsert(const int32_t* key) {
    if (2 * (size() + 1) > static_cast<int64_t>(slots_.size())) Grow();
    uint64_t pos = Hash(key, dim_) & mask_;
    while (true) {
      int32_t s = slots_[pos];
      if (s < 0) {
        s = static_cast<int32_t>(size());
        keys_.insert(keys_.end(), key, key + dim_);
        slots_[pos] = s;
        return s;
      }
      if (Equal(keys_.data() + static_cast<int64_t>(s) * dim_, key)) return s;
      pos = (pos + 1) & mask_;
    }
  }

  // Index of `key`, or -1.
  int32_t Find(const int32_t* key) const {
    uint64_t pos = Hash(key, dim_) & mask_;
    while (true) {
      int32_t s = slots_[pos];
      if (s < 0) return -1;
      if (Equal(keys_.data() + static_cast<int64_t>(s) * dim_, key)) return s;
      pos = (pos + 1) & mask_;
    }
  }

 private:
  bool Equal(const int32_t* a, const int32_t* b) const {
    const int dim = kDim > 0 ? kDim : dim_;
    for (int i = 0; i < dim; ++i)
      if (a[i] != b[i]) return false;
    return true;
  }

  void Grow() {
    std::vector<int32_t> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, -1);
    mask_ = slots_.size() - 1;
    for (int32_t s : old) {
      if (s < 0) continue;
      uint64_t pos = Hash(key(s), dim_) & mask_;
      while (slots_[pos] >= 0) pos = (pos + 1) & mask_;
      slots_[pos] = s;
    }
  }

  int dim_;
  uint64_t mask_ = 0;
  std::vector<int32_t> slots_;
  std::vector<int32_t> keys_;
};

}  // namespace internal

// Scratch memory for Filter(); reuse one per thread of work to avoid reallocations.
template <typename T>
struct FilterWorkspace {
  std::vector<T> a, b;
  int64_t CapacityBytes() const {
    return static_cast<int64_t>((a.capacity() + b.capacity()) * sizeof(T));
  }
};

template <typename T>
class Permutohedral {
 public:
  int feature_dim() const { return d_; }
  int64_t num_points() const { return n_; }
  // Number of lattice vertices (not counting the zero vertex used for missing neighbours).
  int64_t num_vertices() const { return m_; }

  // Bytes this lattice keeps allocated (capacities, build scratch included).
  int64_t CapacityBytes() const {
    return static_cast<int64_t>(offset_.capacity() * 4 + barycentric_.capacity() * sizeof(T) +
                                neighbours_.capacity() * 4 + vertex_start_.capacity() * 8 +
                                splat_point_.capacity() * 4 + splat_weight_.capacity() * sizeof(T) +
                                scratch_rem0_.capacity() * 4 + scratch_rank_.capacity() +
                                scratch_overflow_.capacity());
  }

  // Host bytes a lattice of n points in d dimensions allocates before its vertices are known:
  // n (d + 1) (4 + t) offsets and barycentrics, as much again for the splat lists, and
  // n (4 d + d + 2) of build scratch (t = sizeof(T)). The vertex key tables come on top.
  static int64_t PointBytes(int64_t n, int d) {
    const int64_t t = sizeof(T);
    return n * (d + 1) * (4 + t) * 2 + n * (4 * d + d + 2);
  }
  // Host bytes that depend on the vertex count m once built: m (d + 1) 2 * 4 blur neighbours,
  // (m + 2) 8 splat list starts, and 2 (m + 1) cp t for one filter of cp padded channels.
  int64_t VertexBytes(int cp) const {
    const int64_t t = sizeof(T);
    return m_ * (d_ + 1) * 2 * 4 + (m_ + 2) * 8 + 2 * (m_ + 1) * cp * t;
  }

  // Builds the lattice for n points with features [n, d] (row stride `feature_stride`).
  // Returns an empty string on success, otherwise a description of the problem.
  // `with_splat_lists = false` skips the per-vertex splat lists that Filter() and SplatBlur()
  // need (for callers that splat by scatter over offsets()); BuildSplatLists() adds them later.
  std::string Build(const T* features, int64_t n, int d, int64_t feature_stride,
                    const ParallelFor& parallel_for, bool with_splat_lists = true) {
    std::string error = BuildLattice(features, n, d, feature_stride, parallel_for);
    if (error.empty() && with_splat_lists) BuildSplatLists(parallel_for);
    return error;
  }

  // Whether the splat lists exist (Build with them, or BuildSplatLists since the last Build).
  bool has_splat_lists() const { return has_splat_lists_; }

  // Splat as a gather: for each vertex, the (point, weight) pairs landing on it, in point
  // order, so that splatting is race-free and deterministic when run in parallel.
  // A counting sort by vertex, chunk by chunk in parallel: chunk c's entries of a vertex go
  // after those of chunks < c, which gives exactly the serial (point) order.
  void BuildSplatLists(const ParallelFor& parallel_for) {
    if (has_splat_lists_) return;
    const int d1 = d_ + 1;
    const int64_t n = n_;
    const int64_t chunks = BuildChunks(n);
    auto chunk_begin = [&](int64_t c) { return n * c / chunks; };
    vertex_start_.assign(m_ + 2, 0);
    splat_point_.resize(n * d1);
    splat_weight_.resize(n * d1);
    std::vector<std::vector<int32_t>> pos(chunks);
    parallel_for(chunks, 3.0 * d1 * n / chunks + m_, [&](int64_t cbegin, int64_t cend) {
      for (int64_t c = cbegin; c < cend; ++c) {
        pos[c].assign(m_ + 1, 0);
        int32_t* count = pos[c].data();
        for (int64_t i = chunk_begin(c) * d1; i < chunk_begin(c + 1) * d1; ++i) ++count[offset_[i]];
      }
    });
    int64_t running = 0;
    for (int64_t o = 0; o <= m_; ++o) {
      vertex_start_[o] = running;
      for (int64_t c = 0; c < chunks; ++c) {
        const int32_t count = pos[c][o];
        pos[c][o] = static_cast<int32_t>(running);
        running += count;
      }
    }
    vertex_start_[m_ + 1] = running;
    parallel_for(chunks, 6.0 * d1 * n / chunks, [&](int64_t cbegin, int64_t cend) {
      for (int64_t c = cbegin; c < cend; ++c) {
        int32_t* fill = pos[c].data();
        for (int64_t p = chunk_begin(c); p < chunk_begin(c + 1); ++p) {
          for (int k = 0; k < d1; ++k) {
            const int32_t slot = fill[offset_[p * d1 + k]]++;
            splat_point_[slot] = static_cast<int32_t>(p);
            splat_weight_[slot] = barycentric_[p * d1 + k];
          }
        }
      }
    });
    has_splat_lists_ = true;
  }

 private:
  static int64_t BuildChunks(int64_t n) {
    return std::max<int64_t>(1, std::min<int64_t>(kBuildChunks, n / 1024));
  }

  std::string BuildLattice(const T* features, int64_t n, int d, int64_t feature_stride,
                           const ParallelFor& parallel_for) {
    has_splat_lists_ = false;
    if (d < 1 || d > kMaxFeatureDim)
      return "feature dimension must be in [1, " + std::to_string(kMaxFeatureDim) +
             "]. Received: feature_dim=" + std::to_string(d);
    if (n < 0 || n >= (int64_t{1} << 31) / (d + 1))
      return "the number of points must be in [0, " + std::to_string((int64_t{1} << 31) / (d + 1)) +
             "). Received: n=" + std::to_string(n);
    // Compile-time dimensions for the common cases let the compiler unroll the per-point math.
    switch (d) {
      case 1:
        return BuildImpl<1>(features, n, d, feature_stride, parallel_for);
      case 2:
        return BuildImpl<2>(features, n, d, feature_stride, parallel_for);
      case 3:
        return BuildImpl<3>(features, n, d, feature_stride, parallel_for);
      case 4:
        return BuildImpl<4>(features, n, d, feature_stride, parallel_for);
      case 5:
        return BuildImpl<5>(features, n, d, feature_stride, parallel_for);
      case 6:
        return BuildImpl<6>(features, n, d, feature_stride, parallel_for);
      default:
        return BuildImpl<0>(features, n, d, feature_stride, parallel_for);
    }
  }

 private:
  // kD > 0: the feature dimension known at compile time; 0: `runtime_d`.
  template <int kD>
  std::string BuildImpl(const T* features, int64_t n, int runtime_d, int64_t feature_stride,
                        const ParallelFor& parallel_for) {
    const int d = kD > 0 ? kD : runtime_d;
    d_ = d;
    alpha_ = T(1) / (T(1) + std::pow(T(2), T(-d)));
    n_ = n;
    const int d1 = d + 1;
    // Every element of these is written below: resize() keeps a rebuilt lattice's memory.
    offset_.resize(n * d1);
    barycentric_.resize(n * d1);
    // Per point: remainder-0 point (d ints) and rank (d+1 bytes), the simplex's identity.
    std::vector<int32_t>& rem0 = scratch_rem0_;
    std::vector<uint8_t>& rank = scratch_rank_;
    rem0.resize(n * d);
    rank.resize(n * d1);

    T scale[kMaxFeatureDim];
    const T inv_std = std::sqrt(T(2) / T(3)) * T(d1);
    for (int i = 0; i < d; ++i) scale[i] = inv_std / std::sqrt(T((i + 1) * (i + 2)));
    // Keys are int32: with every |feature * scale| below 2^30 / (d + 1), each elevated coordinate
    // stays below 2^30 in magnitude, and so do the keys, their neighbours and the rank sums
    // (also catches NaN/Inf).
    const T limit = ElevatedCoordinateLimit<T>(d);
    std::vector<uint8_t>& overflow = scratch_overflow_;
    overflow.assign(n, 0);

    parallel_for(n, 60.0 * d1 * d1, [&](int64_t begin, int64_t end) {
      T x[kMaxFeatureDim + 1], e[kMaxFeatureDim + 1], b[kMaxFeatureDim + 2];
      int32_t r[kMaxFeatureDim + 1], rk[kMaxFeatureDim + 1];
      const T inv_d1 = T(1) / T(d1);
#if KSEG_LATTICE_AVX2
      if constexpr (std::is_same<T, float>::value && kD > 0) {
        if (internal::HasAvx2()) {
          for (; begin + 8 <= end; begin += 8)
            internal::EmbedPoints8<kD>(features, feature_stride, begin, scale, limit,
                                       barycentric_.data(), rem0.data(), rank.data(),
                                       overflow.data());
        }
      }
#endif
      for (int64_t p = begin; p < end; ++p) {
        const T* f = features + p * feature_stride;
        T acc = 0;
        bool ok = true;
        for (int j = d; j > 0; --j) {
          const T c = f[j - 1] * scale[j - 1];
          if (!(std::fabs(c) < limit)) ok = false;
          x[j] = acc - T(j) * c;
          acc += c;
        }
        x[0] = acc;
        if (!ok) {
          overflow[p] = 1;
          continue;
        }
        int32_t sum = 0;
        for (int i = 0; i <= d; ++i) {
          const T v = std::nearbyint(x[i] * inv_d1);
          r[i] = static_cast<int32_t>(v) * d1;
          sum += static_cast<int32_t>(v);
          rk[i] = 0;
        }
        for (int i = 0; i <= d; ++i) e[i] = x[i] - T(r[i]);
        // Branch-free: the comparisons are data dependent and mispredict badly.
        for (int i = 0; i < d; ++i) {
          for (int j = i + 1; j <= d; ++j) {
            const int32_t less = e[i] < e[j];
            rk[i] += less;
            rk[j] += 1 - less;
          }
        }
        for (int i = 0; i <= d; ++i) {
          rk[i] += sum;
          const int32_t shift = (rk[i] < 0 ? d1 : 0) - (rk[i] >= d1 ? d1 : 0);
          rk[i] += shift;
          r[i] += shift;
          // Out of 0..d only when rounding lost the coordinates' fractions: flag, never index.
          if (rk[i] < 0 || rk[i] > d) ok = false;
        }
        if (!ok) {
          overflow[p] = 1;
          continue;
        }
        for (int i = 0; i <= d + 1; ++i) b[i] = 0;
        for (int i = 0; i <= d; ++i) {
          const T v = (x[i] - T(r[i])) * inv_d1;
          b[d - rk[i]] += v;
          b[d + 1 - rk[i]] -= v;
        }
        b[0] += T(1) + b[d + 1];
        for (int k = 0; k <= d; ++k) barycentric_[p * d1 + k] = b[k];
        for (int i = 0; i < d; ++i) rem0[p * d + i] = r[i];
        for (int i = 0; i <= d; ++i) rank[p * d1 + i] = static_cast<uint8_t>(rk[i]);
      }
    });
    for (int64_t p = 0; p < n; ++p) {
      if (!overflow[p]) continue;
      const T* f = features + p * feature_stride;
      int axis = 0;
      for (int i = 0; i < d; ++i) {
        if (!(std::fabs(f[i] * scale[i]) < limit)) {
          axis = i;
          break;
        }
      }
      if (std::fabs(f[axis] * scale[axis]) < limit)
        return "features of point " + std::to_string(p) + " are too large for the lattice's " +
               "precision (the embedding lost their fractions); scale them down or use float64. " +
               "Received: features[" + std::to_string(p) +
               ", 0]=" + std::to_string(static_cast<double>(f[0]));
      return "features of point " + std::to_string(p) + " are not finite or too large for the " +
             "lattice's int32 keys: |features[..., " + std::to_string(axis) + "]| must be below " +
             std::to_string(static_cast<double>(limit / scale[axis])) + " with feature_dim " +
             std::to_string(d) + ". Received: features[" + std::to_string(p) + ", " +
             std::to_string(axis) + "]=" + std::to_string(static_cast<double>(f[axis]));
    }

    // Hash the simplex vertices. Neighbouring points often share a simplex: reuse its vertices.
    // Each of kBuildChunks point ranges is hashed into its own table in parallel, then the
    // chunks' keys are merged into one table in chunk order and the point offsets remapped.
    // (The numbering of vertices never changes the filter's result: splat, blur and slice
    // visit the vertices' terms in an order set by the points and axes alone.)
    const int64_t chunks = BuildChunks(n);
    auto chunk_begin = [&](int64_t c) { return n * c / chunks; };
    std::vector<internal::KeyTable<kD>> local;
    local.reserve(chunks);
    for (int64_t c = 0; c < chunks; ++c)
      local.emplace_back(d, std::max<int64_t>(64, (chunk_begin(c + 1) - chunk_begin(c)) / 4 + 64));
    // Points of the same simplex share its vertices: a small direct-mapped cache of simplices
    // (remainder-0 point and ranks) seen in the chunk saves hashing their d + 1 keys again.
    // It never changes the numbering: a cached simplex's vertices are already in the table.
    constexpr int kSimplexCacheBits = 12;
    parallel_for(chunks, 200.0 * d1 * d1 * n / chunks, [&](int64_t cbegin, int64_t cend) {
      std::vector<int32_t> cache;
      for (int64_t c = cbegin; c < cend; ++c) {
        internal::KeyTable<kD>& table = local[c];
        cache.assign(size_t{1} << kSimplexCacheBits, -1);
        int32_t key[kMaxFeatureDim];
        for (int64_t p = chunk_begin(c); p < chunk_begin(c + 1); ++p) {
          const int32_t* r0 = &rem0[p * d];
          const uint8_t* rk = &rank[p * d1];
          uint64_t rank_code = 0;
          for (int i = 0; i <= d; ++i) rank_code = rank_code * 31 + rk[i];
          const uint64_t h =
              internal::KeyTable<kD>::Hash(r0, d) ^ (rank_code * 0x9E3779B97F4A7C15ull);
          int32_t& slot = cache[h >> (64 - kSimplexCacheBits)];
          const int64_t seen = slot;
          if (seen >= 0 && std::memcmp(r0, &rem0[seen * d], sizeof(int32_t) * d) == 0 &&
              std::memcmp(rk, &rank[seen * d1], d1) == 0) {
            std::memcpy(&offset_[p * d1], &offset_[seen * d1], sizeof(int32_t) * d1);
            continue;
          }
          slot = static_cast<int32_t>(p);
          for (int k = 0; k <= d; ++k) {
            for (int i = 0; i < d; ++i) key[i] = r0[i] + (rk[i] <= d - k ? k : k - d1);
            offset_[p * d1 + k] = table.FindOrInsert(key);  // local index for now
          }
        }
      }
    });
    int64_t local_total = 0;
    for (const auto& t : local) local_total += t.size();
    internal::KeyTable<kD> table(d, std::max<int64_t>(64, local_total / 2 + 64));
    std::vector<std::vector<int32_t>> to_global(chunks);
    for (int64_t c = 0; c < chunks; ++c) {
      to_global[c].resize(local[c].size());
      // Vertex indices are stored one-based: index 0 is the always-zero vertex.
      for (int64_t i = 0; i < local[c].size(); ++i)
        to_global[c][i] = table.FindOrInsert(local[c].key(i)) + 1;
      internal::KeyTable<kD>(d, 0).swap(local[c]);
    }
    parallel_for(chunks, 4.0 * d1 * n / chunks, [&](int64_t cbegin, int64_t cend) {
      for (int64_t c = cbegin; c < cend; ++c) {
        const int32_t* map = to_global[c].data();
        for (int64_t i = chunk_begin(c) * d1; i < chunk_begin(c + 1) * d1; ++i)
          offset_[i] = map[offset_[i]];
      }
    });
    m_ = table.size();

    // Blur neighbours: for axis j and vertex v, neighbours_[(j * m + v) * 2 + {0, 1}].
    neighbours_.resize(static_cast<size_t>(d1) * m_ * 2);  // every element is written below
    parallel_for(m_, 40.0 * d1 * d, [&](int64_t begin, int64_t end) {
      int32_t n1[kMaxFeatureDim + 1], n2[kMaxFeatureDim + 1];
      for (int64_t v = begin; v < end; ++v) {
        const int32_t* key = table.key(v);
        for (int j = 0; j <= d; ++j) {
          for (int k = 0; k < d; ++k) {
            n1[k] = key[k] - 1;
            n2[k] = key[k] + 1;
          }
          if (j < d) {
            n1[j] = key[j] + d;
            n2[j] = key[j] - d;
          }
          const int64_t slot = (j * m_ + v) * 2;
          neighbours_[slot] = table.Find(n1) + 1;
          neighbours_[slot + 1] = table.Find(n2) + 1;
        }
      }
    });

    return std::string();
  }

 public:
  // out[p, c] (+)= post_scale[p] * post_factor * L(pre_scale .* in)[p, c] for c < channels,
  // with L the lattice filter (transposed when `transpose`). in/out rows have strides in_stride
  // and out_stride; pre_scale/post_scale may be null (all ones). Rows of `out` beyond `channels`
  // are left untouched.
  void Filter(const T* in, int64_t in_stride, int channels, const T* pre_scale, const T* post_scale,
              T post_factor, bool transpose, bool accumulate, T* out, int64_t out_stride,
              FilterWorkspace<T>* ws, const ParallelFor& parallel_for) const {
    // Whole channel blocks known at compile time keep the accumulators in registers.
    switch (channels) {
#define KSEG_FILTER_CASE(C)                                                                      \
  case C:                                                                                        \
    return FilterImpl<C>(in, in_stride, channels, pre_scale, post_scale, post_factor, transpose, \
                         accumulate, out, out_stride, ws, parallel_for);
      KSEG_FILTER_CASE(1)
      KSEG_FILTER_CASE(8)
      KSEG_FILTER_CASE(16)
      KSEG_FILTER_CASE(24)
      KSEG_FILTER_CASE(32)
#undef KSEG_FILTER_CASE
      default:
        return FilterImpl<0>(in, in_stride, channels, pre_scale, post_scale, post_factor, transpose,
                             accumulate, out, out_stride, ws, parallel_for);
    }
  }

  // Arguments of one splat: gathers pre_scale .* in into `values` rows (one-based vertices).
  struct SplatArgs {
    const T* in;
    int64_t in_stride;
    int channels;
    const T* pre_scale;
    T* values;
  };
  // Splats the vertices [begin, end); callers may pass a copy compiled for wider SIMD.
  using SplatRangeFn = void (*)(const Permutohedral&, const SplatArgs&, int64_t, int64_t);

  // The splat loop for vertices [begin, end) with kC channels (0: args.channels at run time).
  // Always inlined, so a wrapper compiled for another instruction set gets its own copy.
  template <int kC>
  __attribute__((always_inline)) inline void SplatRange(const SplatArgs& a, int64_t begin,
                                                        int64_t end) const {
    const int cp = kC > 0 ? kC : PaddedChannels(a.channels);
    for (int64_t v = begin; v < end; ++v) {
      T* dst = a.values + (v + 1) * cp;
      const int64_t first = vertex_start_[v + 1], last = vertex_start_[v + 2];
      if (kC > 0) {
        T acc[kC > 0 ? kC : 1] = {};
        for (int64_t s = first; s < last; ++s) {
          const int64_t p = splat_point_[s];
          const T w = a.pre_scale ? splat_weight_[s] * a.pre_scale[p] : splat_weight_[s];
          const T* src = a.in + p * a.in_stride;
          for (int c = 0; c < kC; ++c) acc[c] += w * src[c];
        }
        for (int c = 0; c < kC; ++c) dst[c] = acc[c];
      } else {
        std::fill(dst, dst + cp, T(0));
        for (int64_t s = first; s < last; ++s) {
          const int64_t p = splat_point_[s];
          const T w = a.pre_scale ? splat_weight_[s] * a.pre_scale[p] : splat_weight_[s];
          const T* src = a.in + p * a.in_stride;
          for (int c = 0; c < a.channels; ++c) dst[c] += w * src[c];
        }
      }
    }
  }

  template <int kC>
  static void SplatRangeOf(const Permutohedral& lattice, const SplatArgs& a, int64_t begin,
                           int64_t end) {
    lattice.template SplatRange<kC>(a, begin, end);
  }

  // Steps 7-8 only: splats pre_scale .* in (`channels` a multiple of kChannelBlock) and blurs;
  // returns the blurred vertex values [(m + 1) x channels] (row 0 is the zero vertex), valid
  // until `ws` is reused. Finish with SliceAdd per point. `splat_range`, when given, must be
  // SplatRange<channels> (or <0>) compiled however the caller likes.
  const T* SplatBlur(const T* in, int64_t in_stride, int channels, const T* pre_scale,
                     bool transpose, FilterWorkspace<T>* ws, const ParallelFor& parallel_for,
                     SplatRangeFn splat_range = nullptr) const {
    switch (channels) {
#define KSEG_SPLAT_CASE(C)                                                                   \
  case C:                                                                                    \
    return SplatBlurImpl<C>(in, in_stride, channels, pre_scale, transpose, ws, parallel_for, \
                            splat_range);
      KSEG_SPLAT_CASE(8)
      KSEG_SPLAT_CASE(16)
      KSEG_SPLAT_CASE(24)
      KSEG_SPLAT_CASE(32)
#undef KSEG_SPLAT_CASE
      default:
        return SplatBlurImpl<0>(in, in_stride, channels, pre_scale, transpose, ws, parallel_for,
                                splat_range);
    }
  }

  // Step 9 for point p: acc[c] += scale * alpha * sum_k b_k * blurred[vertex k][c], c < cp.
  // kC > 0 must equal cp (compile-time width); kC = 0 reads cp at run time.
  template <int kC>
  __attribute__((always_inline)) inline void SliceAdd(int64_t p, const T* blurred, int cp, T scale,
                                                      T* acc) const {
    if (kC > 0) cp = kC;
    const int d1 = d_ + 1;
    const T s = scale * alpha_;
    const int32_t* off = offset_.data() + p * d1;
    const T* bary = barycentric_.data() + p * d1;
    for (int k = 0; k < d1; ++k) {
      const T w = s * bary[k];
      const T* src = blurred + static_cast<int64_t>(off[k]) * cp;
      for (int c = 0; c < cp; ++c) acc[c] += w * src[c];
    }
  }

  // Raw views of the built lattice for callers with their own (e.g. SIMD) loops:
  // offsets()/barycentrics() are [n, d+1] (one-based vertices, 0 = the zero vertex);
  // vertex_starts()[v + 1] .. vertex_starts()[v + 2] are vertex v's entries in
  // splat_points()/splat_weights(); alpha() is the slice scale of step 9.
  const int32_t* offsets() const { return offset_.data(); }
  const T* barycentrics() const { return barycentric_.data(); }
  const int64_t* vertex_starts() const { return vertex_start_.data(); }
  const int32_t* splat_points() const { return splat_point_.data(); }
  const T* splat_weights() const { return splat_weight_.data(); }
  T alpha() const { return alpha_; }

  // Vertex (one-based, 0 = none) and barycentric weight of point p's k-th simplex vertex.
  int32_t vertex(int64_t p, int k) const { return offset_[p * (d_ + 1) + k]; }
  T weight(int64_t p, int k) const { return barycentric_[p * (d_ + 1) + k]; }

 private:
  // kC > 0: exactly kC channels (1 or a multiple of kChannelBlock); 0: any number.
  template <int kC>
  const T* SplatBlurImpl(const T* in, int64_t in_stride, int channels, const T* pre_scale,
                         bool transpose, FilterWorkspace<T>* ws, const ParallelFor& parallel_for,
                         SplatRangeFn splat_range = nullptr) const {
    if (kC > 0) channels = kC;
    const int cp = kC > 0 ? kC : PaddedChannels(channels);
    const int d1 = d_ + 1;
    ws->a.resize(static_cast<size_t>(m_ + 1) * cp);
    ws->b.resize(static_cast<size_t>(m_ + 1) * cp);
    T* values = ws->a.data();
    T* next = ws->b.data();
    std::fill(values, values + cp, T(0));
    std::fill(next, next + cp, T(0));

    // Splat (gather form).
    const SplatArgs args{in, in_stride, channels, pre_scale, values};
    const SplatRangeFn splat = splat_range != nullptr ? splat_range : &SplatRangeOf<kC>;
    // Vertices gather very different numbers of points (a flat region lands on few vertices),
    // so the work is cut into chunks of equal entry counts, not equal vertex counts.
    const int64_t entries = n_ * d1;
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(m_, 64));
    const int64_t* starts = vertex_start_.data() + 1;  // starts[v]: first entry of vertex v
    auto first_vertex = [&](int64_t chunk) {
      if (chunk >= chunks) return m_;
      return static_cast<int64_t>(std::lower_bound(starts, starts + m_, entries * chunk / chunks) -
                                  starts);
    };
    parallel_for(chunks, 4.0 * cp * static_cast<double>(entries) / chunks,
                 [&](int64_t begin, int64_t end) {
                   splat(*this, args, first_vertex(begin), first_vertex(end));
                 });

    return BlurValues(cp, transpose, ws, parallel_for);
  }

 public:
  // For callers with their own splat: the [(m + 1) x cp] buffer to splat into (row 0, the
  // zero vertex, is zeroed), then BlurValues() (step 8) returns the blurred values.
  T* SplatTarget(int cp, FilterWorkspace<T>* ws) const {
    ws->a.resize(static_cast<size_t>(m_ + 1) * cp);
    ws->b.resize(static_cast<size_t>(m_ + 1) * cp);
    std::fill(ws->a.data(), ws->a.data() + cp, T(0));
    std::fill(ws->b.data(), ws->b.data() + cp, T(0));
    return ws->a.data();
  }
  const T* BlurValues(int cp, bool transpose, FilterWorkspace<T>* ws,
                      const ParallelFor& parallel_for) const {
    T* values = ws->a.data();
    T* next = ws->b.data();
    // Blur, one axis at a time.
    for (int step = 0; step <= d_; ++step) {
      const int j = transpose ? d_ - step : step;
      const int32_t* nb = neighbours_.data() + static_cast<int64_t>(j) * m_ * 2;
      parallel_for(m_, 3.0 * cp, [&](int64_t begin, int64_t end) {
        for (int64_t v = begin; v < end; ++v) {
          const T* self = values + (v + 1) * cp;
          const T* a = values + static_cast<int64_t>(nb[2 * v]) * cp;
          const T* b = values + static_cast<int64_t>(nb[2 * v + 1]) * cp;
          T* dst = next + (v + 1) * cp;
          for (int c = 0; c < cp; ++c) dst[c] = self[c] + T(0.5) * (a[c] + b[c]);
        }
      });
      std::swap(values, next);
    }
    return values;
  }

 private:
  template <int kC>
  void FilterImpl(const T* in, int64_t in_stride, int channels, const T* pre_scale,
                  const T* post_scale, T post_factor, bool transpose, bool accumulate, T* out,
                  int64_t out_stride, FilterWorkspace<T>* ws,
                  const ParallelFor& parallel_for) const {
    if (kC > 0) channels = kC;
    const int cp = kC > 0 ? kC : PaddedChannels(channels);
    const T* blurred =
        SplatBlurImpl<kC>(in, in_stride, channels, pre_scale, transpose, ws, parallel_for);
    parallel_for(n_, 3.0 * (d_ + 1) * cp, [&](int64_t begin, int64_t end) {
      std::vector<T> heap_acc(kC > 0 ? 0 : cp);
      T stack_acc[kC > 0 ? kC : 1];
      T* acc = kC > 0 ? stack_acc : heap_acc.data();
      for (int64_t p = begin; p < end; ++p) {
        for (int c = 0; c < cp; ++c) acc[c] = T(0);
        SliceAdd<kC>(p, blurred, cp, post_factor * (post_scale ? post_scale[p] : T(1)), acc);
        T* dst = out + p * out_stride;
        if (accumulate)
          for (int c = 0; c < channels; ++c) dst[c] += acc[c];
        else
          for (int c = 0; c < channels; ++c) dst[c] = acc[c];
      }
    });
  }

  int d_ = 0;
  T alpha_ = T(1);  // slice scale 1 / (1 + 2^-d)
  int64_t n_ = 0;
  int64_t m_ = 0;
  std::vector<int32_t> offset_;        // [n, d+1] one-based vertex per simplex corner
  std::vector<T> barycentric_;         // [n, d+1]
  std::vector<int32_t> neighbours_;    // [d+1, m, 2] one-based, 0 = absent
  std::vector<int64_t> vertex_start_;  // [m+2] CSR over one-based vertices
  std::vector<int32_t> splat_point_;   // [n*(d+1)]
  std::vector<T> splat_weight_;        // [n*(d+1)]
  // Build-time scratch, kept so that rebuilding a lattice reuses its memory.
  std::vector<int32_t> scratch_rem0_;
  std::vector<uint8_t> scratch_rank_, scratch_overflow_;
  bool has_splat_lists_ = false;
};

}  // namespace lattice
}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_PERMUTOHEDRAL_H_
