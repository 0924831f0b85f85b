// Device functor behind the Kseg>LatticeFilter op. The CPU specialisation lives in
// lattice_filter_op.cc, the GPU one in lattice_filter_op_gpu.cu.cc; both implement the math
// documented in kseg_ops/cc/lattice/permutohedral.h.
#ifndef KSEG_OPS_CC_KERNELS_LATTICE_FILTER_OP_H_
#define KSEG_OPS_CC_KERNELS_LATTICE_FILTER_OP_H_

#include <cstdint>

#include "absl/status/status.h"

namespace Eigen {
struct ThreadPoolDevice;
struct GpuDevice;
}  // namespace Eigen

namespace tensorflow {
class OpKernelContext;
}  // namespace tensorflow

namespace kseg {
namespace functor {

template <typename Device, typename T>
struct LatticeFilter {
  // values [batch, n, channels], features [batch, n, feature_dim] -> output [batch, n, channels];
  // transpose=true applies the transposed filter (used for the gradient).
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Device& d, const T* features,
                          const T* values, int64_t batch, int64_t n, int feature_dim, int channels,
                          bool transpose, T* output);
};

template <typename T>
struct LatticeFilter<Eigen::ThreadPoolDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Eigen::ThreadPoolDevice& d,
                          const T* features, const T* values, int64_t batch, int64_t n,
                          int feature_dim, int channels, bool transpose, T* output);
};

#if GOOGLE_CUDA
template <typename T>
struct LatticeFilter<Eigen::GpuDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d,
                          const T* features, const T* values, int64_t batch, int64_t n,
                          int feature_dim, int channels, bool transpose, T* output);
};
#endif  // GOOGLE_CUDA

}  // namespace functor
}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_LATTICE_FILTER_OP_H_
