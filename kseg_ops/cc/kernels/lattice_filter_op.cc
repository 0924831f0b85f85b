// CPU kernel of Kseg>LatticeFilter (and the GPU kernel's registration when built with CUDA).
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif
#include "kseg_ops/cc/kernels/lattice_filter_op.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/kernels/cpu_parallel.h"
#include "kseg_ops/cc/kernels/op_limits.h"
#include "kseg_ops/cc/lattice/permutohedral.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"

namespace kseg {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

namespace functor {

template <typename T>
absl::Status LatticeFilter<CPUDevice, T>::operator()(OpKernelContext* ctx, const CPUDevice& d,
                                                     const T* features, const T* values,
                                                     int64_t batch, int64_t n, int feature_dim,
                                                     int channels, bool transpose, T* output) {
  // Host bytes: Permutohedral::PointBytes(n, feature_dim) before building, plus
  // VertexBytes(padded channels) once the vertex count is known (see permutohedral.h).
  const std::string sizes =
      absl::StrCat("values.shape=[", batch, ", ", n, ", ", channels, "], features.shape=[", batch,
                   ", ", n, ", ", feature_dim, "]");
  RunControl control = MakeRunControl(ctx);
  const int64_t point_bytes = lattice::Permutohedral<T>::PointBytes(n, feature_dim);
  std::string error = CheckBudget(&control, point_bytes, "lattice_filter", sizes);
  if (!error.empty()) return CoreStatus(control, error);
  const lattice::ParallelFor parallel_for = MakeParallelFor(d);
  return CatchBadAlloc("lattice_filter", sizes, [&] {
    lattice::Permutohedral<T> lat;
    lattice::FilterWorkspace<T> workspace;
    for (int64_t b = 0; b < batch; ++b) {
      if (control.Cancelled()) return absl::CancelledError("lattice_filter was cancelled");
      error = lat.Build(features + b * n * feature_dim, n, feature_dim, feature_dim, parallel_for);
      if (!error.empty())
        return absl::InvalidArgumentError(
            absl::StrCat("features (batch element ", b, "): ", error));
      error = CheckBudget(
          &control, point_bytes + lat.VertexBytes(lattice::PaddedChannels(channels)),
          "lattice_filter", absl::StrCat(sizes, " (lattice vertices: ", lat.num_vertices(), ")"));
      if (!error.empty()) return CoreStatus(control, error);
      lat.Filter(values + b * n * channels, channels, channels, nullptr, nullptr, T(1), transpose,
                 false, output + b * n * channels, channels, &workspace, parallel_for);
    }
    return absl::OkStatus();
  });
}

template struct LatticeFilter<CPUDevice, float>;
template struct LatticeFilter<CPUDevice, double>;

}  // namespace functor

template <typename Device, typename T>
class LatticeFilterOp : public OpKernel {
 public:
  explicit LatticeFilterOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose", &transpose_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& values = ctx->input(0);
    const Tensor& features = ctx->input(1);
    OP_REQUIRES(ctx, values.dims() == 3,
                absl::InvalidArgumentError(absl::StrCat(
                    "values must have rank 3 [batch, n, channels]. Received: values.shape=",
                    values.shape().DebugString())));
    OP_REQUIRES(ctx, features.dims() == 3,
                absl::InvalidArgumentError(
                    absl::StrCat("features must have rank 3 [batch, n, feature_dim]. Received: "
                                 "features.shape=",
                                 features.shape().DebugString())));
    OP_REQUIRES(
        ctx,
        values.dim_size(0) == features.dim_size(0) && values.dim_size(1) == features.dim_size(1),
        absl::InvalidArgumentError(absl::StrCat(
            "values and features must agree in batch and n. Received: values.shape=",
            values.shape().DebugString(), ", features.shape=", features.shape().DebugString())));
    const int64_t feature_dim = features.dim_size(2);
    OP_REQUIRES(ctx, feature_dim >= 1 && feature_dim <= lattice::kMaxFeatureDim,
                absl::InvalidArgumentError(absl::StrCat(
                    "features' last dimension must be in [1, ", lattice::kMaxFeatureDim,
                    "]. Received: features.shape=", features.shape().DebugString())));
    OP_REQUIRES(ctx, values.dim_size(2) >= 1 && values.dim_size(2) <= (1 << 20),
                absl::InvalidArgumentError(absl::StrCat(
                    "values' channel dimension must be in [1, 2^20]. Received: values.shape=",
                    values.shape().DebugString())));
    OP_REQUIRES(
        ctx, values.dim_size(1) < (int64_t{1} << 31) / (feature_dim + 1),
        absl::InvalidArgumentError(absl::StrCat(
            "values must hold fewer than ", (int64_t{1} << 31) / (feature_dim + 1),
            " points per batch element. Received: values.shape=", values.shape().DebugString())));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, values.shape(), &output));
    if (values.NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, functor::LatticeFilter<Device, T>()(
                            ctx, ctx->eigen_device<Device>(), features.flat<T>().data(),
                            values.flat<T>().data(), values.dim_size(0), values.dim_size(1),
                            static_cast<int>(feature_dim), static_cast<int>(values.dim_size(2)),
                            transpose_, output->flat<T>().data()));
  }

 private:
  bool transpose_ = false;
};

#define KSEG_REGISTER_CPU(T)                                                              \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("Kseg>LatticeFilter").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      LatticeFilterOp<CPUDevice, T>);
KSEG_REGISTER_CPU(float);
KSEG_REGISTER_CPU(double);
#undef KSEG_REGISTER_CPU

#if GOOGLE_CUDA
#define KSEG_REGISTER_GPU(T)                                                              \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("Kseg>LatticeFilter").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      LatticeFilterOp<GPUDevice, T>);
KSEG_REGISTER_GPU(float);
KSEG_REGISTER_GPU(double);
#undef KSEG_REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace kseg
