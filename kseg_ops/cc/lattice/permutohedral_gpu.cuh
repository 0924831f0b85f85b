// CUDA version of the permutohedral lattice of permutohedral.h (read its comment block first: the
// math here follows it step by step, and a test compares both). TensorFlow-free: every buffer is
// allocated by the caller and every launch goes to the caller's stream.
//
// Construction, per set of n points with d-dimensional features (n * (d + 1) "entries", one per
// simplex corner of each point):
//   1. ElevateKernel: per point, steps 1-6 of permutohedral.h; writes each entry's integer key
//      and barycentric weight. Arithmetic uses explicitly rounded operations (no fused
//      multiply-add) so that keys, which are decided by comparisons, match the CPU bit for bit.
//   2. InsertKernel: entries insert their keys into an open-addressing table with atomicCAS. The
//      entry that wins a slot owns the key and draws a one-based vertex index from a counter;
//      the others record the owner. Vertex numbering therefore depends on scheduling, but the
//      filter does not depend on the numbering.
//   3. ResolveKernel: entry -> vertex index, vertex -> owning entry (whose key is the vertex key).
//   -- the caller reads the vertex count m back (one synchronisation) and sizes what follows --
//   4. NeighbourKernel: the two blur neighbours of every vertex along every axis (0 = absent).
//   5. Splat list: entries grouped by vertex (count, one-block exclusive scan, fill), so that the
//      splat sums runs of the same vertex in registers (few atomics, balanced work).
// Filtering (per call): splat, d + 1 blur passes, slice; same formulas and operand order as the
// CPU code. Only the order in which a vertex sums its entries differs (fill order and atomics),
// so GPU and CPU agree to rounding, not bit for bit, and GPU runs may differ in the last bits.
#ifndef KSEG_OPS_CC_LATTICE_PERMUTOHEDRAL_GPU_CUH_
#define KSEG_OPS_CC_LATTICE_PERMUTOHEDRAL_GPU_CUH_

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define KSEG_LAUNCH(kernel, blocks, threads, stream, ...) \
  kernel<<<(blocks), (threads), 0, (stream)>>>(__VA_ARGS__)
#else
// Without nvcc the kernels run on the host, one thread after another (tests of the algorithm on
// machines without a GPU); see kseg_ops/cc/testing/cuda_host_emulation.h.
#include "kseg_ops/cc/testing/cuda_host_emulation.h"
#endif

#include <climits>
#include <cmath>
#include <cstdint>

#include "kseg_ops/cc/common/gpu_loops.cuh"

namespace kseg {
namespace lattice {
namespace gpu {

// Largest feature dimension (lattice::kMaxFeatureDim of permutohedral.h; a test checks they
// agree). Kept here so that device code does not depend on the CPU header.
constexpr int kMaxFeatureDim = 16;

using ::kseg::gpu::BlocksFor;
using ::kseg::gpu::kThreadsPerBlock;
#if defined(__CUDACC__)
constexpr int kScanThreads = 1024;
#else
constexpr int kScanThreads = 1;  // emulated threads run one after another: no barriers
#endif

// Correctly rounded arithmetic that the compiler may not contract into fused multiply-adds.
template <typename T>
struct Exact;
template <>
struct Exact<float> {
  __device__ static float Mul(float a, float b) { return __fmul_rn(a, b); }
  __device__ static float Add(float a, float b) { return __fadd_rn(a, b); }
  __device__ static float Sub(float a, float b) { return __fsub_rn(a, b); }
  __device__ static float RoundHalfEven(float a) { return rintf(a); }
};
template <>
struct Exact<double> {
  __device__ static double Mul(double a, double b) { return __dmul_rn(a, b); }
  __device__ static double Add(double a, double b) { return __dadd_rn(a, b); }
  __device__ static double Sub(double a, double b) { return __dsub_rn(a, b); }
  __device__ static double RoundHalfEven(double a) { return rint(a); }
};

// Constants of step 1, computed on the host with the CPU code's expressions.
template <typename T>
struct ElevationConstants {
  T scale[kMaxFeatureDim];
  T inv_d1;
  T limit;
};

template <typename T>
ElevationConstants<T> MakeElevationConstants(int d) {
  ElevationConstants<T> c;
  const int d1 = d + 1;
  const T inv_std = std::sqrt(T(2) / T(3)) * T(d1);
  for (int i = 0; i < kMaxFeatureDim; ++i)
    c.scale[i] = i < d ? inv_std / std::sqrt(T((i + 1) * (i + 2))) : T(0);
  c.inv_d1 = T(1) / T(d1);
  // As lattice::ElevatedCoordinateLimit: keys stay in int32, float32 keeps the fractions.
  c.limit = (sizeof(T) < sizeof(double) ? T(1 << 22) : T(1 << 30)) / T(d1);
  return c;
}

// Same hash as internal::KeyTable::Hash (not required for correctness, kept for symmetry).
__device__ inline uint64_t HashKey(const int32_t* key, int dim) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < dim; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
  }
  return h;
}

__device__ inline bool KeysEqual(const int32_t* a, const int32_t* b, int dim) {
  for (int i = 0; i < dim; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// Counters written by the construction kernels; the caller zeroes vertex_count and sets
// first_bad_point = n before launching, and reads both back afterwards.
struct BuildCounters {
  int32_t vertex_count;     // distinct vertices m
  int32_t first_bad_point;  // smallest point whose feature is non-finite or too large; n if none
  int32_t table_full;       // 1 if an insert found no free slot (cannot happen at load <= 1/2)
};

static __global__ void InitCountersKernel(BuildCounters* counters, int64_t n) {
  counters->vertex_count = 0;
  counters->first_bad_point = static_cast<int32_t>(n);
  counters->table_full = 0;
}

// Steps 1-6 for each point; keys [n * (d + 1), d], weights [n * (d + 1)].
template <typename T>
static __global__ void ElevateKernel(const T* __restrict__ features, int64_t n, int d,
                                     int64_t feature_stride, ElevationConstants<T> k,
                                     int32_t* __restrict__ entry_keys, T* __restrict__ entry_weight,
                                     BuildCounters* counters) {
  using E = Exact<T>;
  const int d1 = d + 1;
  KSEG_GRID_LOOP(p, n) {
    const T* f = features + p * feature_stride;
    T x[kMaxFeatureDim + 1], e[kMaxFeatureDim + 1], b[kMaxFeatureDim + 2];
    int32_t r[kMaxFeatureDim + 1], rk[kMaxFeatureDim + 1];
    T acc = 0;
    bool ok = true;
    for (int j = d; j > 0; --j) {
      const T c = E::Mul(f[j - 1], k.scale[j - 1]);
      if (!(fabs(c) < k.limit)) ok = false;
      x[j] = E::Sub(acc, E::Mul(T(j), c));
      acc = E::Add(acc, c);
    }
    x[0] = acc;
    int32_t* keys = entry_keys + p * d1 * d;
    auto mark_bad = [&]() {
      atomicMin(&counters->first_bad_point, static_cast<int32_t>(p));
      // Keys still get defined values so that later kernels stay in bounds.
      for (int i = 0; i < d1 * d; ++i) keys[i] = 0;
      for (int i = 0; i < d1; ++i) entry_weight[p * d1 + i] = T(0);
    };
    if (!ok) {
      mark_bad();
      continue;
    }
    int32_t sum = 0;
    for (int i = 0; i <= d; ++i) {
      const T v = E::RoundHalfEven(E::Mul(x[i], k.inv_d1));
      r[i] = static_cast<int32_t>(v) * d1;
      sum += static_cast<int32_t>(v);
      rk[i] = 0;
    }
    for (int i = 0; i <= d; ++i) e[i] = E::Sub(x[i], T(r[i]));
    for (int i = 0; i < d; ++i) {
      for (int j = i + 1; j <= d; ++j) {
        if (e[i] < e[j])
          ++rk[i];
        else
          ++rk[j];
      }
    }
    for (int i = 0; i <= d; ++i) {
      rk[i] += sum;
      if (rk[i] < 0) {
        rk[i] += d1;
        r[i] += d1;
      } else if (rk[i] >= d1) {
        rk[i] -= d1;
        r[i] -= d1;
      }
      // Out of 0..d only when rounding lost the coordinates' fractions: flag, never index.
      if (rk[i] < 0 || rk[i] > d) ok = false;
    }
    if (!ok) {
      mark_bad();
      continue;
    }
    for (int i = 0; i <= d + 1; ++i) b[i] = 0;
    for (int i = 0; i <= d; ++i) {
      // rk is in [0, d] (checked above), so both indices are in [0, d + 1].
      const T v = E::Mul(E::Sub(x[i], T(r[i])), k.inv_d1);
      b[d - rk[i]] = E::Add(b[d - rk[i]], v);
      b[d + 1 - rk[i]] = E::Sub(b[d + 1 - rk[i]], v);
    }
    b[0] = E::Add(b[0], E::Add(T(1), b[d + 1]));
    for (int corner = 0; corner <= d; ++corner) {
      entry_weight[p * d1 + corner] = b[corner];
      for (int i = 0; i < d; ++i)
        keys[corner * d + i] = r[i] + (rk[i] <= d - corner ? corner : corner - d1);
    }
  }
}

// Step 2. table [capacity] holds owning entry ids (-1 = empty); capacity is a power of two
// >= 2 * entries. owner_vertex[e] (one-based vertex) is written for owning entries only.
static __global__ void InsertKernel(const int32_t* __restrict__ entry_keys, int64_t entries, int d,
                                    int32_t* table, uint64_t mask,
                                    int32_t* __restrict__ entry_owner,
                                    int32_t* __restrict__ owner_vertex, BuildCounters* counters) {
  KSEG_GRID_LOOP(e, entries) {
    const int32_t* key = entry_keys + e * d;
    uint64_t pos = HashKey(key, d) & mask;
    bool placed = false;
    for (uint64_t probe = 0; probe <= mask; ++probe) {
      const int32_t prev = atomicCAS(&table[pos], -1, static_cast<int32_t>(e));
      if (prev < 0) {
        entry_owner[e] = static_cast<int32_t>(e);
        owner_vertex[e] = atomicAdd(&counters->vertex_count, 1) + 1;
        placed = true;
        break;
      }
      // Keys were written by an earlier launch, so the owner's key is complete.
      if (KeysEqual(entry_keys + static_cast<int64_t>(prev) * d, key, d)) {
        entry_owner[e] = prev;
        placed = true;
        break;
      }
      pos = (pos + 1) & mask;
    }
    if (!placed) {
      counters->table_full = 1;
      entry_owner[e] = -1;
    }
  }
}

// Step 3. entry_vertex [entries] one-based; vertex_entry [m] zero-based vertex -> owning entry.
static __global__ void ResolveKernel(int64_t entries, const int32_t* __restrict__ entry_owner,
                                     const int32_t* __restrict__ owner_vertex,
                                     int32_t* __restrict__ entry_vertex,
                                     int32_t* __restrict__ vertex_entry) {
  KSEG_GRID_LOOP(e, entries) {
    const int32_t owner = entry_owner[e];
    if (owner < 0) {  // only after a table_full error, which the caller reports
      entry_vertex[e] = 0;
      continue;
    }
    const int32_t v = owner_vertex[owner];
    entry_vertex[e] = v;
    if (owner == e) vertex_entry[v - 1] = static_cast<int32_t>(e);
  }
}

// Index of the vertex with `key` (one-based) or 0 when it is not in the lattice.
__device__ inline int32_t FindVertex(const int32_t* key, int d, const int32_t* table, uint64_t mask,
                                     const int32_t* entry_keys, const int32_t* owner_vertex) {
  uint64_t pos = HashKey(key, d) & mask;
  for (uint64_t probe = 0; probe <= mask; ++probe) {
    const int32_t s = table[pos];
    if (s < 0) return 0;
    if (KeysEqual(entry_keys + static_cast<int64_t>(s) * d, key, d)) return owner_vertex[s];
    pos = (pos + 1) & mask;
  }
  return 0;
}

// Step 4. neighbours [(d + 1) * m * 2], layout (axis * m + vertex) * 2 + {0, 1}, one-based.
static __global__ void NeighbourKernel(int64_t m, int d, const int32_t* __restrict__ vertex_entry,
                                       const int32_t* __restrict__ entry_keys,
                                       const int32_t* __restrict__ table, uint64_t mask,
                                       const int32_t* __restrict__ owner_vertex,
                                       int32_t* __restrict__ neighbours) {
  const int d1 = d + 1;
  KSEG_GRID_LOOP(item, m * d1) {
    const int64_t v = item / d1;
    const int j = static_cast<int>(item % d1);
    const int32_t* key = entry_keys + static_cast<int64_t>(vertex_entry[v]) * d;
    int32_t n1[kMaxFeatureDim], n2[kMaxFeatureDim];
    for (int i = 0; i < d; ++i) {
      n1[i] = key[i] - 1;
      n2[i] = key[i] + 1;
    }
    if (j < d) {
      n1[j] = key[j] + d;
      n2[j] = key[j] - d;
    }
    const int64_t slot = (j * m + v) * 2;
    neighbours[slot] = FindVertex(n1, d, table, mask, entry_keys, owner_vertex);
    neighbours[slot + 1] = FindVertex(n2, d, table, mask, entry_keys, owner_vertex);
  }
}

// Step 5a: entries per vertex (counts [m], zeroed by the caller).
static __global__ void CountEntriesKernel(int64_t entries, const int32_t* __restrict__ entry_vertex,
                                          int64_t m, int32_t* __restrict__ counts) {
  KSEG_GRID_LOOP(e, entries) {
    const int32_t v = entry_vertex[e];
    if (v >= 1 && v <= m) atomicAdd(&counts[v - 1], 1);
  }
}

// Step 5b: starts [m + 1] = exclusive prefix sum of counts. One block of kScanThreads threads;
// each thread scans a contiguous chunk (the lattice is built once per image, so this is cheap).
static __global__ void ExclusiveScanKernel(const int32_t* __restrict__ counts, int64_t m,
                                           int32_t* __restrict__ starts) {
  __shared__ int32_t partial[kScanThreads];
  const int tid = threadIdx.x;
  const int64_t per = (m + kScanThreads - 1) / kScanThreads;
  const int64_t begin = tid * per < m ? tid * per : m;
  const int64_t end = begin + per < m ? begin + per : m;
  int32_t sum = 0;
  for (int64_t i = begin; i < end; ++i) sum += counts[i];
  partial[tid] = sum;
  __syncthreads();
  for (int offset = 1; offset < kScanThreads; offset <<= 1) {
    const int32_t add = tid >= offset ? partial[tid - offset] : 0;
    __syncthreads();
    partial[tid] += add;
    __syncthreads();
  }
  int32_t run = tid > 0 ? partial[tid - 1] : 0;
  for (int64_t i = begin; i < end; ++i) {
    starts[i] = run;
    run += counts[i];
  }
  if (tid == kScanThreads - 1) starts[m] = partial[tid];
}

// Step 5c: splat_entries [entries] grouped by vertex; cursor [m] starts as a copy of starts.
static __global__ void FillSplatListKernel(int64_t entries,
                                           const int32_t* __restrict__ entry_vertex, int64_t m,
                                           int32_t* __restrict__ cursor,
                                           int32_t* __restrict__ splat_entries) {
  KSEG_GRID_LOOP(e, entries) {
    const int32_t v = entry_vertex[e];
    if (v >= 1 && v <= m) splat_entries[atomicAdd(&cursor[v - 1], 1)] = static_cast<int32_t>(e);
  }
}

// Filter step 7: values [(m + 1), channels] (+)= the splat of `in`; values must start at zero.
// splat_entries lists the entries grouped by vertex; each thread takes a fixed-size run of that
// list for one channel, sums consecutive entries of the same vertex in a register and adds each
// sum to the vertex with one atomic. Fixed-size runs keep the work balanced even when one vertex
// collects thousands of pixels (flat image regions); only the order of the few atomic additions
// per vertex varies between runs. pre_scale [n] may be null.
constexpr int64_t kSplatRun = 32;

template <typename T>
static __global__ void SplatKernel(int64_t entries, int d, int channels,
                                   const int32_t* __restrict__ splat_entries,
                                   const int32_t* __restrict__ entry_vertex,
                                   const T* __restrict__ entry_weight, const T* __restrict__ in,
                                   int64_t in_stride, const T* __restrict__ pre_scale,
                                   T* __restrict__ values) {
  const int d1 = d + 1;
  const int64_t runs = (entries + kSplatRun - 1) / kSplatRun;
  KSEG_GRID_LOOP(item, runs * channels) {
    const int c = static_cast<int>(item % channels);
    const int64_t begin = (item / channels) * kSplatRun;
    const int64_t end = begin + kSplatRun < entries ? begin + kSplatRun : entries;
    int64_t current = -1;
    T sum = 0;
    for (int64_t s = begin; s < end; ++s) {
      const int64_t e = splat_entries[s];
      const int64_t v = entry_vertex[e];
      if (v != current) {
        if (current > 0) atomicAdd(&values[current * channels + c], sum);
        current = v;
        sum = 0;
      }
      const int64_t p = e / d1;
      const T w = pre_scale ? entry_weight[e] * pre_scale[p] : entry_weight[e];
      sum += w * in[p * in_stride + c];
    }
    if (current > 0) atomicAdd(&values[current * channels + c], sum);
  }
}

// Filter step 8 along one axis: next[v] = values[v] + 0.5 (values[n1] + values[n2]).
template <typename T>
static __global__ void BlurKernel(int64_t m, int channels,
                                  const int32_t* __restrict__ axis_neighbours,
                                  const T* __restrict__ values, T* __restrict__ next) {
  KSEG_GRID_LOOP(item, m * channels) {
    const int64_t v = item / channels;
    const int c = static_cast<int>(item % channels);
    const int64_t a = axis_neighbours[2 * v];
    const int64_t b = axis_neighbours[2 * v + 1];
    next[(v + 1) * channels + c] = values[(v + 1) * channels + c] +
                                   T(0.5) * (values[a * channels + c] + values[b * channels + c]);
  }
}

// Filter step 9: out[p, c] (+)= post_factor * alpha * post_scale[p] * sum_k b_k values[vertex_k].
template <typename T>
static __global__ void SliceKernel(int64_t n, int d, int channels,
                                   const int32_t* __restrict__ entry_vertex,
                                   const T* __restrict__ entry_weight, const T* __restrict__ values,
                                   T alpha, const T* __restrict__ post_scale, T post_factor,
                                   bool accumulate, T* __restrict__ out, int64_t out_stride) {
  const int d1 = d + 1;
  KSEG_GRID_LOOP(item, n * channels) {
    const int64_t p = item / channels;
    const int c = static_cast<int>(item % channels);
    const T scale = post_factor * alpha * (post_scale ? post_scale[p] : T(1));
    T acc = accumulate ? out[p * out_stride + c] : T(0);
    for (int k = 0; k < d1; ++k) {
      const T w = scale * entry_weight[p * d1 + k];
      acc += w * values[static_cast<int64_t>(entry_vertex[p * d1 + k]) * channels + c];
    }
    out[p * out_stride + c] = acc;
  }
}

// Smallest power of two >= 2 * entries (and >= 64): the hash table capacity.
inline int64_t TableCapacity(int64_t entries) {
  int64_t cap = 64;
  while (cap < 2 * entries) cap <<= 1;
  return cap;
}

// Device buffers of one lattice. The first group is sized from n and d (BuildBytes); the
// second from the vertex count m that phase one returns.
template <typename T>
struct LatticeBuffers {
  // Phase one, [entries] unless noted; entries = n * (d + 1).
  int32_t* entry_keys = nullptr;  // [entries * d]
  T* entry_weight = nullptr;
  int32_t* entry_owner = nullptr;
  int32_t* owner_vertex = nullptr;
  int32_t* entry_vertex = nullptr;  // one-based
  int32_t* vertex_entry = nullptr;  // [entries] (only the first m are used)
  int32_t* table = nullptr;         // [TableCapacity(entries)]
  BuildCounters* counters = nullptr;
  // Phase two.
  int32_t* neighbours = nullptr;     // [(d + 1) * m * 2]
  int32_t* starts = nullptr;         // [m + 1]
  int32_t* cursor = nullptr;         // [m]
  int32_t* splat_entries = nullptr;  // [entries]
};

// A built lattice, as the filter needs it.
template <typename T>
struct LatticeView {
  int64_t n = 0;
  int d = 0;
  int64_t m = 0;
  const int32_t* entry_vertex = nullptr;
  const T* entry_weight = nullptr;
  const int32_t* neighbours = nullptr;
  const int32_t* starts = nullptr;
  const int32_t* splat_entries = nullptr;
};

// Carves the buffers out of one caller-allocated block (256-byte aligned pieces).
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename U>
  U* Take(int64_t count) {
    U* p = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
    used_ += (static_cast<int64_t>(sizeof(U)) * (count > 0 ? count : 1) + 255) / 256 * 256;
    return p;
  }
  int64_t used() const { return used_; }

 private:
  char* base_;
  int64_t used_ = 0;
};

// Bytes for phase one; with a non-null base also points buf's phase-one members into it.
template <typename T>
int64_t CarvePhaseOne(void* base, int64_t n, int d, LatticeBuffers<T>* buf) {
  const int64_t entries = n * (d + 1);
  Carver c(base);
  buf->entry_keys = c.Take<int32_t>(entries * d);
  buf->entry_weight = c.Take<T>(entries);
  buf->entry_owner = c.Take<int32_t>(entries);
  buf->owner_vertex = c.Take<int32_t>(entries);
  buf->entry_vertex = c.Take<int32_t>(entries);
  buf->vertex_entry = c.Take<int32_t>(entries);
  buf->table = c.Take<int32_t>(TableCapacity(entries));
  buf->counters = c.Take<BuildCounters>(1);
  return c.used();
}

// Bytes for phase two given the vertex count m; as CarvePhaseOne.
template <typename T>
int64_t CarvePhaseTwo(void* base, int64_t n, int d, int64_t m, LatticeBuffers<T>* buf) {
  const int64_t entries = n * (d + 1);
  Carver c(base);
  buf->neighbours = c.Take<int32_t>((d + 1) * m * 2);
  buf->starts = c.Take<int32_t>(m + 1);
  buf->cursor = c.Take<int32_t>(m);
  buf->splat_entries = c.Take<int32_t>(entries);
  return c.used();
}

// Phase one: steps 1-3. The caller then copies *counters to the host after synchronising.
template <typename T>
cudaError_t LaunchBuildPhaseOne(cudaStream_t stream, const T* features, int64_t n, int d,
                                int64_t feature_stride, const LatticeBuffers<T>& buf) {
  const int64_t entries = n * (d + 1);
  const int64_t capacity = TableCapacity(entries);
  cudaError_t err = cudaMemsetAsync(buf.table, 0xFF, sizeof(int32_t) * capacity, stream);
  if (err != cudaSuccess) return err;
  KSEG_LAUNCH(InitCountersKernel, 1, 1, stream, buf.counters, n);
  if (n == 0) return cudaGetLastError();
  KSEG_LAUNCH(ElevateKernel<T>, BlocksFor(n), kThreadsPerBlock, stream, features, n, d,
              feature_stride, MakeElevationConstants<T>(d), buf.entry_keys, buf.entry_weight,
              buf.counters);
  KSEG_LAUNCH(InsertKernel, BlocksFor(entries), kThreadsPerBlock, stream, buf.entry_keys, entries,
              d, buf.table, static_cast<uint64_t>(capacity - 1), buf.entry_owner, buf.owner_vertex,
              buf.counters);
  KSEG_LAUNCH(ResolveKernel, BlocksFor(entries), kThreadsPerBlock, stream, entries, buf.entry_owner,
              buf.owner_vertex, buf.entry_vertex, buf.vertex_entry);
  return cudaGetLastError();
}

// Phase two: steps 4-5, once m is known on the host.
template <typename T>
cudaError_t LaunchBuildPhaseTwo(cudaStream_t stream, int64_t n, int d, int64_t m,
                                const LatticeBuffers<T>& buf, LatticeView<T>* view) {
  const int64_t entries = n * (d + 1);
  const int64_t capacity = TableCapacity(entries);
  view->n = n;
  view->d = d;
  view->m = m;
  view->entry_vertex = buf.entry_vertex;
  view->entry_weight = buf.entry_weight;
  view->neighbours = buf.neighbours;
  view->starts = buf.starts;
  view->splat_entries = buf.splat_entries;
  cudaError_t err = cudaMemsetAsync(buf.starts, 0, sizeof(int32_t) * (m + 1), stream);
  if (err != cudaSuccess || m == 0) return err;
  KSEG_LAUNCH(NeighbourKernel, BlocksFor(m * (d + 1)), kThreadsPerBlock, stream, m, d,
              buf.vertex_entry, buf.entry_keys, buf.table, static_cast<uint64_t>(capacity - 1),
              buf.owner_vertex, buf.neighbours);
  err = cudaMemsetAsync(buf.cursor, 0, sizeof(int32_t) * m, stream);
  if (err != cudaSuccess) return err;
  KSEG_LAUNCH(CountEntriesKernel, BlocksFor(entries), kThreadsPerBlock, stream, entries,
              buf.entry_vertex, m, buf.cursor);
  KSEG_LAUNCH(ExclusiveScanKernel, 1, kScanThreads, stream, buf.cursor, m, buf.starts);
  err = cudaMemcpyAsync(buf.cursor, buf.starts, sizeof(int32_t) * m, cudaMemcpyDeviceToDevice,
                        stream);
  if (err != cudaSuccess) return err;
  KSEG_LAUNCH(FillSplatListKernel, BlocksFor(entries), kThreadsPerBlock, stream, entries,
              buf.entry_vertex, m, buf.cursor, buf.splat_entries);
  return cudaGetLastError();
}

// out (+)= post_scale .* post_factor * L(pre_scale .* in), as Permutohedral::Filter. values and
// scratch hold (m + 1) * channels elements each. pre_scale/post_scale may be null.
template <typename T>
cudaError_t LaunchFilter(cudaStream_t stream, const LatticeView<T>& lat, const T* in,
                         int64_t in_stride, int channels, const T* pre_scale, const T* post_scale,
                         T post_factor, bool transpose, bool accumulate, T* out, int64_t out_stride,
                         T* values, T* scratch) {
  if (lat.n == 0 || channels == 0) return cudaSuccess;
  const int64_t m = lat.m;
  const int64_t entries = lat.n * (lat.d + 1);
  // Row 0 (the absent vertex) stays zero in both buffers; the splat accumulates into zeros.
  cudaError_t err = cudaMemsetAsync(values, 0, sizeof(T) * (m + 1) * channels, stream);
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(scratch, 0, sizeof(T) * channels, stream);
  if (err != cudaSuccess) return err;
  if (m > 0) {
    KSEG_LAUNCH(SplatKernel<T>, BlocksFor((entries + kSplatRun - 1) / kSplatRun * channels),
                kThreadsPerBlock, stream, entries, lat.d, channels, lat.splat_entries,
                lat.entry_vertex, lat.entry_weight, in, in_stride, pre_scale, values);
    for (int step = 0; step <= lat.d; ++step) {
      const int j = transpose ? lat.d - step : step;
      KSEG_LAUNCH(BlurKernel<T>, BlocksFor(m * channels), kThreadsPerBlock, stream, m, channels,
                  lat.neighbours + static_cast<int64_t>(j) * m * 2, values, scratch);
      T* swap = values;
      values = scratch;
      scratch = swap;
    }
  }
  const T alpha = T(1) / (T(1) + std::pow(T(2), T(-lat.d)));
  KSEG_LAUNCH(SliceKernel<T>, BlocksFor(lat.n * channels), kThreadsPerBlock, stream, lat.n, lat.d,
              channels, lat.entry_vertex, lat.entry_weight, values, alpha, post_scale, post_factor,
              accumulate, out, out_stride);
  return cudaGetLastError();
}

}  // namespace gpu
}  // namespace lattice
}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_PERMUTOHEDRAL_GPU_CUH_
