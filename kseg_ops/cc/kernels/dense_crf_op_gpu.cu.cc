// GPU functor of Kseg>DenseCrf: per image, the gaussian and bilateral lattices are built once
// (one host synchronisation for both vertex counts) and the mean-field iterations of
// kseg_ops/cc/lattice/dense_crf_gpu.cuh run entirely on the op's stream. Same formulas and order
// of operations as the CPU mean field of kseg_ops/cc/lattice/dense_crf.h.
#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/kernels/dense_crf_op.h"
#include "kseg_ops/cc/kernels/lattice_gpu_glue.cu.h"
#include "kseg_ops/cc/lattice/dense_crf_gpu.cuh"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kseg {
namespace {

using lattice::gpu::BlocksFor;
using lattice::gpu::kThreadsPerBlock;

// unary[i] from scores[i] as `kind` says (see CrfScores).
template <typename T>
__global__ void UnaryFromScoresKernel(const T* __restrict__ scores, int64_t size, int kind,
                                      T* __restrict__ unary) {
  KSEG_GRID_LOOP(i, size) {
    const T x = scores[i];
    if (kind == static_cast<int>(CrfScores::kProbabilities))
      unary[i] = -log(fmin(fmax(x, T(kProbabilityClip)), T(1)));
    else if (kind == static_cast<int>(CrfScores::kLogits))
      unary[i] = -x;
    else
      unary[i] = x;
  }
}

}  // namespace

namespace functor {

template <typename T>
absl::Status DenseCrf<Eigen::GpuDevice, T>::operator()(
    tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d, const DenseCrfParams& params,
    const T* scores, const T* image, int64_t batch, int64_t h, int64_t w, int channels, T* q) {
  using gpu_glue::AllocateArray;
  using gpu_glue::CudaStatus;
  cudaStream_t stream = d.stream();
  const int64_t n = h * w;
  if (batch < 1 || n < 1 || channels < 1) return absl::OkStatus();
  const bool symmetric = params.normalization == CrfNormalization::kSymmetric;

  // Non-finite inputs, reported as the CPU kernel does (one synchronisation for both).
  {
    int64_t index[2];
    T value[2];
    KSEG_GPU_RETURN_IF_ERROR(gpu_glue::FindNonFinite(ctx, stream, scores, batch * n * channels,
                                                     image, batch * n * 3, index, value));
    if (index[0] >= 0)
      return absl::InvalidArgumentError(
          NonFiniteMessage(ScoresName(params.scores), index[0], {batch, h, w, channels}, value[0]));
    if (index[1] >= 0)
      return absl::InvalidArgumentError(
          NonFiniteMessage("image", index[1], {batch, h, w, 3}, value[1]));
  }

  // The unary energies: the input itself, or converted from probabilities / logits.
  const T* unary = scores;
  tensorflow::Tensor unary_holder;
  if (params.scores != CrfScores::kUnary) {
    T* converted = nullptr;
    KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, batch * n * channels, &unary_holder, &converted));
    UnaryFromScoresKernel<T><<<BlocksFor(batch * n * channels), kThreadsPerBlock, 0, stream>>>(
        scores, batch * n * channels, static_cast<int>(params.scores), converted);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "dense CRF unary"));
    unary = converted;
  }

  tensorflow::Tensor features_holder, ones_holder, norm_holder, pairwise_holder;
  T* features = nullptr;
  T* ones = nullptr;
  T* norms = nullptr;
  T* pairwise = nullptr;
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, n * 7, &features_holder, &features));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, n, &ones_holder, &ones));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, 2 * n, &norm_holder, &norms));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, n * channels, &pairwise_holder, &pairwise));
  T* gaussian_features = features;
  T* bilateral_features = features + 2 * n;

  crf::gpu::MeanFieldSettings settings;
  settings.iterations = params.iterations;
  settings.gaussian_compat = params.gaussian_compat;
  settings.bilateral_compat = params.bilateral_compat;
  settings.symmetric = symmetric;
  gpu_glue::GpuLattice<T> gaussian, bilateral;
  absl::Status filter_status;
  auto filter_with = [&](gpu_glue::GpuLattice<T>* lattice) {
    return [&, lattice](const T* in, int64_t in_stride, int ch, const T* pre, const T* post,
                        T factor, bool accumulate, T* out, int64_t out_stride) {
      filter_status = lattice->Filter(ctx, stream, in, in_stride, ch, pre, post, factor,
                                      /*transpose=*/false, accumulate, out, out_stride);
      return filter_status.ok();
    };
  };
  for (int64_t b = 0; b < batch; ++b) {
    const T* img = image + b * n * 3;
    const T* un = unary + b * n * channels;
    T* q_out = q + b * n * channels;
    std::string error = crf::gpu::LaunchCrfFeatures<T>(stream, img, n, w, params.gaussian_sxy,
                                                       params.bilateral_sxy, params.bilateral_srgb,
                                                       gaussian_features, bilateral_features);
    if (!error.empty()) return absl::InternalError(error);
    KSEG_GPU_RETURN_IF_ERROR(gaussian.Start(ctx, stream, gaussian_features, n, 2, 2));
    KSEG_GPU_RETURN_IF_ERROR(bilateral.Start(ctx, stream, bilateral_features, n, 5, 5));
    const lattice::gpu::BuildCounters* device_counters[2] = {gaussian.device_counters(),
                                                             bilateral.device_counters()};
    lattice::gpu::BuildCounters counters[2];
    KSEG_GPU_RETURN_IF_ERROR(gpu_glue::ReadCounters(stream, device_counters, 2, counters));
    // Same wording as the CPU kernel.
    for (int k = 0; k < 2; ++k) {
      const std::string build_error = (k == 0 ? gaussian : bilateral).BuildError(counters[k]);
      if (!build_error.empty())
        return absl::InvalidArgumentError(CrfLatticeError(params, k == 1, b, build_error));
    }
    KSEG_GPU_RETURN_IF_ERROR(gaussian.Finish(ctx, stream, counters[0], "gaussian lattice"));
    KSEG_GPU_RETURN_IF_ERROR(bilateral.Finish(ctx, stream, counters[1], "bilateral lattice"));
    error = crf::gpu::RunMeanField<T>(stream, settings, n, channels, un, ones, norms, pairwise,
                                      q_out, filter_with(&gaussian), filter_with(&bilateral));
    if (!filter_status.ok()) return filter_status;
    if (!error.empty()) return absl::InternalError(error);
  }
  return absl::OkStatus();
}

template struct DenseCrf<Eigen::GpuDevice, float>;
template struct DenseCrf<Eigen::GpuDevice, double>;

}  // namespace functor
}  // namespace kseg

#endif  // GOOGLE_CUDA
