// Device functor behind the Kseg>DenseCrf op (mean-field inference of the fully connected CRF,
// Kraehenbuehl & Koltun 2011; the math is in lattice/dense_crf_params.h). The CPU
// specialisation (dense_crf_op.cc) runs lattice/dense_crf.h, the GPU one (dense_crf_op_gpu.cu.cc)
// lattice/dense_crf_gpu.cuh.
#ifndef KSEG_OPS_CC_KERNELS_DENSE_CRF_OP_H_
#define KSEG_OPS_CC_KERNELS_DENSE_CRF_OP_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kseg_ops/cc/lattice/dense_crf_params.h"

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
struct DenseCrf {
  // scores [batch,h,w,c] (see CrfScores), image rgb as T in 0..255 [batch,h,w,3] -> q [batch,h,w,c]
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Device& d,
                          const DenseCrfParams& p, const T* scores, const T* image, int64_t batch,
                          int64_t h, int64_t w, int channels, T* q);
};

template <typename T>
struct DenseCrf<Eigen::ThreadPoolDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Eigen::ThreadPoolDevice& d,
                          const DenseCrfParams& p, const T* scores, const T* image, int64_t batch,
                          int64_t h, int64_t w, int channels, T* q);
};

#if GOOGLE_CUDA
template <typename T>
struct DenseCrf<Eigen::GpuDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d,
                          const DenseCrfParams& p, const T* scores, const T* image, int64_t batch,
                          int64_t h, int64_t w, int channels, T* q);
};
#endif  // GOOGLE_CUDA

}  // namespace functor
}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_DENSE_CRF_OP_H_
