// GPU functor of Kseg>LatticeFilter: one permutohedral lattice per batch item, built and applied
// on the op's stream (see permutohedral_gpu.cuh for the kernels).
#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include <string>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/kernels/lattice_filter_op.h"
#include "kseg_ops/cc/kernels/lattice_gpu_glue.cu.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kseg {
namespace functor {

template <typename T>
absl::Status LatticeFilter<Eigen::GpuDevice, T>::operator()(
    tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d, const T* features, const T* values,
    int64_t batch, int64_t n, int feature_dim, int channels, bool transpose, T* output) {
  if (batch < 0 || n < 0 || channels < 0)
    return absl::InvalidArgumentError(
        "batch, n and channels must be >= 0. Received: batch=" + std::to_string(batch) +
        ", n=" + std::to_string(n) + ", channels=" + std::to_string(channels));
  cudaStream_t stream = d.stream();
  gpu_glue::GpuLattice<T> lattice;
  for (int64_t b = 0; b < batch; ++b) {
    const T* item_features = features + b * n * feature_dim;
    const T* item_values = values + b * n * channels;
    T* item_output = output + b * n * channels;
    KSEG_GPU_RETURN_IF_ERROR(
        lattice.Start(ctx, stream, item_features, n, feature_dim, feature_dim));
    lattice::gpu::BuildCounters counters;
    const lattice::gpu::BuildCounters* device_counters = lattice.device_counters();
    KSEG_GPU_RETURN_IF_ERROR(gpu_glue::ReadCounters(stream, &device_counters, 1, &counters));
    // Same wording as the CPU kernel.
    KSEG_GPU_RETURN_IF_ERROR(
        lattice.Finish(ctx, stream, counters, absl::StrCat("features (batch element ", b, ")")));
    KSEG_GPU_RETURN_IF_ERROR(lattice.Filter(ctx, stream, item_values, channels, channels, nullptr,
                                            nullptr, T(1), transpose, /*accumulate=*/false,
                                            item_output, channels));
  }
  return absl::OkStatus();
}

template struct LatticeFilter<Eigen::GpuDevice, float>;
template struct LatticeFilter<Eigen::GpuDevice, double>;

}  // namespace functor
}  // namespace kseg

#endif  // GOOGLE_CUDA
