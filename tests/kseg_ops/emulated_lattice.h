// A permutohedral_gpu.cuh lattice built and applied on the host through cuda_host_emulation.h,
// shared by the emulated tests.
#ifndef TESTS_KSEG_OPS_EMULATED_LATTICE_H_
#define TESTS_KSEG_OPS_EMULATED_LATTICE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kseg_ops/cc/lattice/permutohedral_gpu.cuh"
#include "kseg_ops/cc/testing/mini_test.h"

namespace kseg {
namespace testing {

namespace emulated_gpu = ::kseg::lattice::gpu;

// A built emulated lattice and the host memory behind it.
template <typename T>
struct EmulatedLattice {
  std::vector<std::max_align_t> phase_one, phase_two;
  emulated_gpu::LatticeBuffers<T> buffers;
  emulated_gpu::LatticeView<T> view;
  emulated_gpu::BuildCounters counters;

  void Build(const std::vector<T>& features, int64_t n, int d) { Build(features.data(), n, d); }

  void Build(const T* features, int64_t n, int d) {
    const int64_t one = emulated_gpu::CarvePhaseOne<T>(nullptr, n, d, &buffers);
    phase_one.assign(one / sizeof(std::max_align_t) + 1, std::max_align_t());
    emulated_gpu::CarvePhaseOne<T>(phase_one.data(), n, d, &buffers);
    KSEG_EXPECT(emulated_gpu::LaunchBuildPhaseOne<T>(nullptr, features, n, d, d, buffers) ==
                cudaSuccess);
    counters = *buffers.counters;
    if (counters.first_bad_point < n) return;
    const int64_t m = counters.vertex_count;
    const int64_t two = emulated_gpu::CarvePhaseTwo<T>(nullptr, n, d, m, &buffers);
    phase_two.assign(two / sizeof(std::max_align_t) + 1, std::max_align_t());
    emulated_gpu::CarvePhaseTwo<T>(phase_two.data(), n, d, m, &buffers);
    KSEG_EXPECT(emulated_gpu::LaunchBuildPhaseTwo<T>(nullptr, n, d, m, buffers, &view) ==
                cudaSuccess);
  }

  void Filter(const std::vector<T>& in, int channels, const T* pre, const T* post, T factor,
              bool transpose, bool accumulate, std::vector<T>* out) {
    Filter(in.data(), channels, channels, pre, post, factor, transpose, accumulate, out->data(),
           channels);
  }

  void Filter(const T* in, int64_t in_stride, int channels, const T* pre, const T* post, T factor,
              bool transpose, bool accumulate, T* out, int64_t out_stride) {
    // Garbage in the scratch buffers: the filter must not depend on their contents.
    std::vector<T> values((view.m + 1) * channels, T(-7)), scratch((view.m + 1) * channels, T(-7));
    KSEG_EXPECT(emulated_gpu::LaunchFilter<T>(nullptr, view, in, in_stride, channels, pre, post,
                                              factor, transpose, accumulate, out, out_stride,
                                              values.data(), scratch.data()) == cudaSuccess);
  }
};

}  // namespace testing
}  // namespace kseg

#endif  // TESTS_KSEG_OPS_EMULATED_LATTICE_H_
