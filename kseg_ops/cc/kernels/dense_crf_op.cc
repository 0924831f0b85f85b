// CPU kernel of Kseg>DenseCrf (and the GPU kernel's registration when built with CUDA): checks
// the inputs and runs the TF-free mean field of kseg_ops/cc/lattice/dense_crf.h on TF's threads.
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif
#include "kseg_ops/cc/kernels/dense_crf_op.h"

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/common/non_finite.h"
#include "kseg_ops/cc/kernels/cpu_parallel.h"
#include "kseg_ops/cc/kernels/op_limits.h"
#include "kseg_ops/cc/lattice/dense_crf.h"
#include "tensorflow/core/framework/op_kernel.h"
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
absl::Status DenseCrf<CPUDevice, T>::operator()(OpKernelContext* ctx, const CPUDevice& d,
                                                const DenseCrfParams& params, const T* scores,
                                                const T* image, int64_t batch, int64_t h, int64_t w,
                                                int channels, T* q) {
  RunControl control = MakeRunControl(ctx);
  return CatchBadAlloc("the dense CRF", crf::CrfSizes(batch, h, w, channels), [&] {
    const std::string error = crf::DenseCrfCpu(params, scores, image, batch, h, w, channels, q,
                                               MakeParallelFor(d), /*allow_wide=*/true, &control);
    return CoreStatus(control, error);
  });
}

template struct DenseCrf<CPUDevice, float>;
template struct DenseCrf<CPUDevice, double>;

}  // namespace functor

namespace {

std::vector<int64_t> Dims(const ::tensorflow::TensorShape& shape) {
  std::vector<int64_t> dims(shape.dims());
  for (int i = 0; i < shape.dims(); ++i) dims[i] = shape.dim_size(i);
  return dims;
}

}  // namespace

template <typename Device, typename T>
class DenseCrfOp : public OpKernel {
 public:
  explicit DenseCrfOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("iterations", &params_.iterations));
    const std::string iterations_error = CrfIterationsError(params_.iterations);
    OP_REQUIRES(ctx, iterations_error.empty(), absl::InvalidArgumentError(iterations_error));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gaussian_sxy", &params_.gaussian_sxy));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gaussian_compat", &params_.gaussian_compat));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bilateral_sxy", &params_.bilateral_sxy));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bilateral_srgb", &params_.bilateral_srgb));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bilateral_compat", &params_.bilateral_compat));
    std::string normalization;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("normalization", &normalization));
    params_.normalization =
        normalization == "after" ? CrfNormalization::kAfter : CrfNormalization::kSymmetric;
    std::string scores_kind;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scores_kind", &scores_kind));
    params_.scores = scores_kind == "probabilities" ? CrfScores::kProbabilities
                     : scores_kind == "logits"      ? CrfScores::kLogits
                                                    : CrfScores::kUnary;
    for (const auto& [name, value] :
         {std::pair<const char*, float>{"gaussian_sxy", params_.gaussian_sxy},
          {"bilateral_sxy", params_.bilateral_sxy},
          {"bilateral_srgb", params_.bilateral_srgb}}) {
      OP_REQUIRES(ctx, std::isfinite(value) && value > 0,
                  absl::InvalidArgumentError(absl::StrCat(
                      name, " must be a positive finite number. Received: ", name, "=", value)));
    }
    for (const auto& [name, value] :
         {std::pair<const char*, float>{"gaussian_compat", params_.gaussian_compat},
          {"bilateral_compat", params_.bilateral_compat}}) {
      OP_REQUIRES(ctx, std::isfinite(value),
                  absl::InvalidArgumentError(absl::StrCat(
                      name, " must be a finite number. Received: ", name, "=", value)));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& image = ctx->input(1);
    const char* name = ScoresName(params_.scores);
    OP_REQUIRES(ctx, scores.dims() == 4,
                absl::InvalidArgumentError(absl::StrCat(
                    name, " must have rank 4 [batch, height, width, classes]. Received: ", name,
                    ".shape=", scores.shape().DebugString())));
    OP_REQUIRES(ctx, image.dims() == 4 && image.dim_size(3) == 3,
                absl::InvalidArgumentError(
                    absl::StrCat("image must have shape [batch, height, width, 3]. Received: "
                                 "image.shape=",
                                 image.shape().DebugString())));
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES(ctx, scores.dim_size(i) == image.dim_size(i),
                  absl::InvalidArgumentError(absl::StrCat(
                      name, " and image must agree in batch, height and width. Received: ", name,
                      ".shape=", scores.shape().DebugString(),
                      ", image.shape=", image.shape().DebugString())));
    }
    const int64_t classes = scores.dim_size(3);
    OP_REQUIRES(
        ctx, classes >= 1 && classes <= 4096,
        absl::InvalidArgumentError(absl::StrCat("the number of classes (the last dimension of ",
                                                name, ") must be in [1, 4096]. Received: ", name,
                                                ".shape=", scores.shape().DebugString())));
    const int64_t h = scores.dim_size(1), w = scores.dim_size(2);
    OP_REQUIRES(
        ctx, h >= 1 && w >= 1,
        absl::InvalidArgumentError(absl::StrCat("image must not be empty. Received: image.shape=",
                                                image.shape().DebugString())));
    OP_REQUIRES(
        ctx, h * w < (int64_t{1} << 31) / 6,
        absl::InvalidArgumentError(absl::StrCat(
            "image must have fewer than ", (int64_t{1} << 31) / 6,
            " pixels for the lattice. Received: image.shape=", image.shape().DebugString())));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, scores.shape(), &output));
    if (scores.NumElements() == 0) return;
    if constexpr (std::is_same<Device, CPUDevice>::value) {
      const ParallelFor parallel_for = MakeParallelFor(ctx->eigen_device<CPUDevice>());
      const T* data = scores.flat<T>().data();
      const int64_t bad_score = FirstNonFinite(data, scores.NumElements(), parallel_for);
      OP_REQUIRES(ctx, bad_score < 0,
                  absl::InvalidArgumentError(
                      NonFiniteMessage(name, bad_score, Dims(scores.shape()),
                                       static_cast<double>(data[bad_score < 0 ? 0 : bad_score]))));
      const T* pixels = image.flat<T>().data();
      const int64_t bad_pixel = FirstNonFinite(pixels, image.NumElements(), parallel_for);
      OP_REQUIRES(ctx, bad_pixel < 0,
                  absl::InvalidArgumentError(NonFiniteMessage(
                      "image", bad_pixel, Dims(image.shape()),
                      static_cast<double>(pixels[bad_pixel < 0 ? 0 : bad_pixel]))));
    }
    OP_REQUIRES_OK(ctx, functor::DenseCrf<Device, T>()(
                            ctx, ctx->eigen_device<Device>(), params_, scores.flat<T>().data(),
                            image.flat<T>().data(), scores.dim_size(0), h, w,
                            static_cast<int>(classes), output->flat<T>().data()));
  }

 private:
  DenseCrfParams params_;
};

#define KSEG_REGISTER_CPU(T)                                                         \
  REGISTER_KERNEL_BUILDER(                                                           \
      Name("Kseg>DenseCrf").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      DenseCrfOp<CPUDevice, T>);
KSEG_REGISTER_CPU(float);
KSEG_REGISTER_CPU(double);
#undef KSEG_REGISTER_CPU

#if GOOGLE_CUDA
#define KSEG_REGISTER_GPU(T)                                                         \
  REGISTER_KERNEL_BUILDER(                                                           \
      Name("Kseg>DenseCrf").Device(::tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
      DenseCrfOp<GPUDevice, T>);
KSEG_REGISTER_GPU(float);
KSEG_REGISTER_GPU(double);
#undef KSEG_REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace kseg
