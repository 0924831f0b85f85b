// GPU functor of Kseg>DenseCrf: per image, the gaussian and bilateral lattices are built once
// (one host synchronisation for both vertex counts) and the mean-field iterations of
// kseg_ops/cc/lattice/dense_crf_gpu.cuh run entirely on the op's stream. Same formulas and order
// of operations as the CPU functor in dense_crf_op.cc.
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

#define KSEG_CRF_GRID_LOOP(i, total)                                                         \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

__device__ inline bool IsFinite(float x) { return isfinite(x); }
__device__ inline bool IsFinite(double x) { return isfinite(x); }

// first[0] = smallest flat index of a non-finite value in `data`, left alone if there is none
// (the caller initialises it to `size`).
template <typename T>
__global__ void FirstNonFiniteKernel(const T* __restrict__ data, int64_t size,
                                     unsigned long long* first) {
  KSEG_CRF_GRID_LOOP(i, size) {
    if (!IsFinite(data[i])) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

// unary[i] from scores[i] as `kind` says (see CrfScores).
template <typename T>
__global__ void UnaryFromScoresKernel(const T* __restrict__ scores, int64_t size, int kind,
                                      T* __restrict__ unary) {
  KSEG_CRF_GRID_LOOP(i, size) {
    const T x = scores[i];
    if (kind == static_cast<int>(CrfScores::kProbabilities))
      unary[i] = -log(fmin(fmax(x, T(kProbabilityClip)), T(1)));
    else if (kind == static_cast<int>(CrfScores::kLogits))
      unary[i] = -x;
    else
      unary[i] = x;
  }
}

#undef KSEG_CRF_GRID_LOOP

const char* ScoresName(CrfScores kind) {
  switch (kind) {
    case CrfScores::kProbabilities:
      return "probabilities";
    case CrfScores::kLogits:
      return "logits";
    default:
      return "unary";
  }
}

// "(b, y, x, c) (flat index f)" for flat index f of a [batch, h, w, depth] tensor.
std::string IndexString(int64_t flat, int64_t h, int64_t w, int64_t depth) {
  return absl::StrCat("(", flat / (h * w * depth), ", ", flat / (w * depth) % h, ", ",
                      flat / depth % w, ", ", flat % depth, ") (flat index ", flat, ")");
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
    tensorflow::Tensor first_holder;
    unsigned long long* first = nullptr;
    KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, 2, &first_holder, &first));
    const unsigned long long sizes[2] = {static_cast<unsigned long long>(batch * n * channels),
                                         static_cast<unsigned long long>(batch * n * 3)};
    KSEG_GPU_RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(first, sizes, sizeof(sizes), cudaMemcpyHostToDevice, stream),
                   "dense CRF input check"));
    FirstNonFiniteKernel<T><<<BlocksFor(batch * n * channels), kThreadsPerBlock, 0, stream>>>(
        scores, batch * n * channels, first);
    FirstNonFiniteKernel<T><<<BlocksFor(batch * n * 3), kThreadsPerBlock, 0, stream>>>(
        image, batch * n * 3, first + 1);
    unsigned long long found[2] = {0, 0};
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "dense CRF input check"));
    KSEG_GPU_RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(found, first, sizeof(found), cudaMemcpyDeviceToHost, stream),
                   "dense CRF input check"));
    // Also keeps `sizes` alive until its copy has run.
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "dense CRF input check"));
    // Same wording as the CPU kernel (the offending value is not copied back).
    if (found[0] < sizes[0])
      return absl::InvalidArgumentError(absl::StrCat(ScoresName(params.scores),
                                                     " holds a non-finite value at index ",
                                                     IndexString(found[0], h, w, channels)));
    if (found[1] < sizes[1])
      return absl::InvalidArgumentError(
          absl::StrCat("image holds a non-finite value at index ", IndexString(found[1], h, w, 3)));
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
    KSEG_GPU_RETURN_IF_ERROR(gaussian.Finish(
        ctx, stream, counters[0],
        absl::StrCat("gaussian_sxy = ", params.gaussian_sxy, " makes pixel positions unusable")));
    KSEG_GPU_RETURN_IF_ERROR(bilateral.Finish(
        ctx, stream, counters[1],
        absl::StrCat("image (batch element ", b, ") with bilateral_sxy = ", params.bilateral_sxy,
                     ", bilateral_srgb = ", params.bilateral_srgb)));
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
