// First NaN or infinity of an array (CPU, and GPU under nvcc), TF-free: the ops refuse such inputs
// up front with the index of the first one.
#ifndef KSEG_OPS_CC_COMMON_NON_FINITE_H_
#define KSEG_OPS_CC_COMMON_NON_FINITE_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kseg_ops/cc/common/parallel_for.h"
#if defined(__CUDACC__)
#include "kseg_ops/cc/common/gpu_loops.cuh"
#endif

namespace kseg {

// Index of the first non-finite element of data[0, size), or -1. Blocks are screened with a
// branch-free test of the exponent bits (vectorises); only a block holding a NaN/Inf is
// searched.
template <typename T>
int64_t FirstNonFinite(const T* data, int64_t size, const ParallelFor& parallel_for) {
  static_assert(std::is_floating_point<T>::value && (sizeof(T) == 4 || sizeof(T) == 8),
                "float or double");
  using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  constexpr Bits kExponent = sizeof(T) == 4 ? Bits(0x7F800000u) : Bits(0x7FF0000000000000ull);
  constexpr int64_t kBlock = 4096;
  std::atomic<int64_t> first(std::numeric_limits<int64_t>::max());
  parallel_for((size + kBlock - 1) / kBlock, kBlock, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t lo = block * kBlock, hi = std::min(size, lo + kBlock);
      Bits bad = 0;
      for (int64_t i = lo; i < hi; ++i) {
        Bits b;
        std::memcpy(&b, data + i, sizeof(b));
        bad |= static_cast<Bits>((b & kExponent) == kExponent);
      }
      if (!bad) continue;
      for (int64_t i = lo; i < hi; ++i) {
        if (!std::isfinite(data[i])) {
          int64_t cur = first.load();
          while (i < cur && !first.compare_exchange_weak(cur, i)) {
          }
          return;
        }
      }
    }
  });
  const int64_t f = first.load();
  return f == std::numeric_limits<int64_t>::max() ? -1 : f;
}

// The error for a non-finite element at flat index `flat` of an array of shape `dims` (empty:
// the flat index only), CPU and GPU alike, e.g.
//   "image holds a non-finite value at index (0, 1, 2, 0) (flat index 6). Received:
//    image[0, 1, 2, 0]=nan"
// `note` (may be empty) follows the index, before the period.
inline std::string NonFiniteMessage(const std::string& name, int64_t flat,
                                    const std::vector<int64_t>& dims, double value,
                                    const std::string& note = "") {
  std::string index;
  int64_t rest = flat;
  std::vector<int64_t> coords(dims.size());
  for (size_t i = dims.size(); i-- > 0;) {
    coords[i] = dims[i] > 0 ? rest % dims[i] : 0;
    rest = dims[i] > 0 ? rest / dims[i] : rest;
  }
  for (size_t i = 0; i < coords.size(); ++i) index += (i ? ", " : "") + std::to_string(coords[i]);
  const std::string text = std::isnan(value) ? "nan" : (value < 0 ? "-inf" : "inf");
  if (dims.empty())
    return name + " holds a non-finite value at flat index " + std::to_string(flat) + note +
           ". Received: " + name + ".flat[" + std::to_string(flat) + "]=" + text;
  return name + " holds a non-finite value at index (" + index + ") (flat index " +
         std::to_string(flat) + ")" + note + ". Received: " + name + "[" + index + "]=" + text;
}

#if defined(__CUDACC__)
// The same on the GPU: *first = min(*first, index of every non-finite element); the caller sets
// *first to `size` beforehand, so it is left at `size` when all are finite.
template <typename T>
__global__ void FirstNonFiniteKernel(const T* __restrict__ data, int64_t size,
                                     unsigned long long* first) {
  KSEG_GRID_LOOP(i, size) {
    if (!isfinite(data[i])) atomicMin(first, static_cast<unsigned long long>(i));
  }
}
#endif  // __CUDACC__

}  // namespace kseg

#endif  // KSEG_OPS_CC_COMMON_NON_FINITE_H_
