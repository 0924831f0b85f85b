// GPU functor of Kseg>DenseCrf: per image, the gaussian and bilateral lattices are built once
// (one host synchronisation for both vertex counts) and the mean-field iterations run entirely on
// the op's stream: filter Q with both lattices into the pairwise term, then a fused softmax.
// Same formulas and order of operations as the CPU functor in dense_crf_op.cc.
#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/kernels/dense_crf_op.h"
#include "kseg_ops/cc/kernels/lattice_gpu_glue.cu.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kseg {
namespace {

using lattice::gpu::BlocksFor;
using lattice::gpu::kThreadsPerBlock;

#define KSEG_CRF_GRID_LOOP(i, total)                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  \
       i < (total); i += static_cast<int64_t>(blockDim.x) * gridDim.x)

__device__ inline float ExpOf(float x) { return expf(x); }
__device__ inline double ExpOf(double x) { return exp(x); }
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

// Lattice features of every pixel: gaussian (x, y) / sxy and bilateral (x, y) / sxy, rgb / srgb.
template <typename T>
__global__ void CrfFeaturesKernel(const T* __restrict__ image, int64_t n, int64_t w, T inv_gs,
                                  T inv_bs, T inv_br, T* __restrict__ gaussian,
                                  T* __restrict__ bilateral) {
  KSEG_CRF_GRID_LOOP(p, n) {
    const T x = T(p % w), y = T(p / w);
    gaussian[p * 2] = x * inv_gs;
    gaussian[p * 2 + 1] = y * inv_gs;
    T* f = bilateral + p * 5;
    f[0] = x * inv_bs;
    f[1] = y * inv_bs;
    f[2] = image[p * 3] * inv_br;
    f[3] = image[p * 3 + 1] * inv_br;
    f[4] = image[p * 3 + 2] * inv_br;
  }
}

template <typename T>
__global__ void FillKernel(T* __restrict__ data, int64_t size, T value) {
  KSEG_CRF_GRID_LOOP(i, size) data[i] = value;
}

// D = L 1 -> D^-1/2 (symmetric) or D^-1 (after), in place.
template <typename T>
__global__ void NormaliserKernel(T* __restrict__ norm, int64_t n, bool symmetric) {
  KSEG_CRF_GRID_LOOP(p, n) {
    norm[p] = symmetric ? T(1) / sqrt(norm[p] + T(1e-20)) : T(1) / (norm[p] + T(1e-20));
  }
}

// q[p, :] = softmax(pairwise[p, :] - unary[p, :]); pairwise may be null (zero).
template <typename T>
__global__ void SoftmaxKernel(const T* __restrict__ unary, const T* __restrict__ pairwise,
                              int64_t n, int channels, T* __restrict__ q) {
  KSEG_CRF_GRID_LOOP(p, n) {
    const T* un = unary + p * channels;
    const T* pw = pairwise ? pairwise + p * channels : nullptr;
    T* out = q + p * channels;
    T m = -INFINITY;
    for (int c = 0; c < channels; ++c) {
      const T v = (pw ? pw[c] : T(0)) - un[c];
      out[c] = v;
      m = v > m ? v : m;
    }
    T sum = 0;
    for (int c = 0; c < channels; ++c) {
      const T e = ExpOf(out[c] - m);
      out[c] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
    for (int c = 0; c < channels; ++c) out[c] *= inv;
  }
}

#undef KSEG_CRF_GRID_LOOP

}  // namespace

namespace functor {

template <typename T>
absl::Status DenseCrf<Eigen::GpuDevice, T>::operator()(tensorflow::OpKernelContext* ctx,
                                                       const Eigen::GpuDevice& d,
                                                       const DenseCrfParams& params,
                                                       const T* unary, const T* image,
                                                       int64_t batch, int64_t h, int64_t w,
                                                       int channels, T* q) {
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
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(first, sizes, sizeof(sizes), cudaMemcpyHostToDevice, stream),
        "dense CRF input check"));
    FirstNonFiniteKernel<T><<<BlocksFor(batch * n * channels), kThreadsPerBlock, 0, stream>>>(
        unary, batch * n * channels, first);
    FirstNonFiniteKernel<T><<<BlocksFor(batch * n * 3), kThreadsPerBlock, 0, stream>>>(
        image, batch * n * 3, first + 1);
    unsigned long long found[2] = {0, 0};
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "dense CRF input check"));
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(found, first, sizeof(found), cudaMemcpyDeviceToHost, stream),
        "dense CRF input check"));
    // Also keeps `sizes` alive until its copy has run.
    KSEG_GPU_RETURN_IF_ERROR(
        CudaStatus(cudaStreamSynchronize(stream), "dense CRF input check"));
    if (found[0] < sizes[0])
      return absl::InvalidArgumentError(absl::StrCat(
          "unary holds a non-finite value (NaN or Inf in the probabilities or logits) at flat "
          "index ",
          found[0]));
    if (found[1] < sizes[1])
      return absl::InvalidArgumentError(
          absl::StrCat("image holds a non-finite value at flat index ", found[1]));
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
  T* norm_g = norms;
  T* norm_b = norms + n;
  FillKernel<T><<<BlocksFor(n), kThreadsPerBlock, 0, stream>>>(ones, n, T(1));

  const T inv_gs = T(1) / T(params.gaussian_sxy), inv_bs = T(1) / T(params.bilateral_sxy),
          inv_br = T(1) / T(params.bilateral_srgb);
  gpu_glue::GpuLattice<T> gaussian, bilateral;
  for (int64_t b = 0; b < batch; ++b) {
    const T* img = image + b * n * 3;
    const T* un = unary + b * n * channels;
    T* q_out = q + b * n * channels;
    CrfFeaturesKernel<T><<<BlocksFor(n), kThreadsPerBlock, 0, stream>>>(
        img, n, w, inv_gs, inv_bs, inv_br, gaussian_features, bilateral_features);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "dense CRF features"));
    KSEG_GPU_RETURN_IF_ERROR(gaussian.Start(ctx, stream, gaussian_features, n, 2, 2));
    KSEG_GPU_RETURN_IF_ERROR(bilateral.Start(ctx, stream, bilateral_features, n, 5, 5));
    const lattice::gpu::BuildCounters* device_counters[2] = {gaussian.device_counters(),
                                                             bilateral.device_counters()};
    lattice::gpu::BuildCounters counters[2];
    KSEG_GPU_RETURN_IF_ERROR(gpu_glue::ReadCounters(stream, device_counters, 2, counters));
    KSEG_GPU_RETURN_IF_ERROR(gaussian.Finish(
        ctx, stream, counters[0],
        absl::StrCat("gaussian_sxy = ", params.gaussian_sxy, " makes pixel positions unusable")));
    KSEG_GPU_RETURN_IF_ERROR(bilateral.Finish(
        ctx, stream, counters[1],
        absl::StrCat("image (batch element ", b, ") with bilateral_sxy = ", params.bilateral_sxy,
                     ", bilateral_srgb = ", params.bilateral_srgb)));

    // Normalisers from the filter of ones.
    KSEG_GPU_RETURN_IF_ERROR(gaussian.Filter(ctx, stream, ones, 1, 1, nullptr, nullptr, T(1),
                                             false, false, norm_g, 1));
    KSEG_GPU_RETURN_IF_ERROR(bilateral.Filter(ctx, stream, ones, 1, 1, nullptr, nullptr, T(1),
                                              false, false, norm_b, 1));
    NormaliserKernel<T><<<BlocksFor(2 * n), kThreadsPerBlock, 0, stream>>>(norms, 2 * n,
                                                                            symmetric);
    const T* pre_g = symmetric ? norm_g : nullptr;
    const T* pre_b = symmetric ? norm_b : nullptr;

    // Q0 = softmax(-unary), then the mean-field updates; Q lives in the output.
    SoftmaxKernel<T><<<BlocksFor(n), kThreadsPerBlock, 0, stream>>>(un, nullptr, n, channels,
                                                                     q_out);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "dense CRF softmax"));
    for (int it = 0; it < params.iterations; ++it) {
      KSEG_GPU_RETURN_IF_ERROR(gaussian.Filter(ctx, stream, q_out, channels, channels, pre_g,
                                               norm_g, T(params.gaussian_compat), false, false,
                                               pairwise, channels));
      KSEG_GPU_RETURN_IF_ERROR(bilateral.Filter(ctx, stream, q_out, channels, channels, pre_b,
                                                norm_b, T(params.bilateral_compat), false, true,
                                                pairwise, channels));
      SoftmaxKernel<T><<<BlocksFor(n), kThreadsPerBlock, 0, stream>>>(un, pairwise, n, channels,
                                                                       q_out);
      KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "dense CRF softmax"));
    }
  }
  return absl::OkStatus();
}

template struct DenseCrf<Eigen::GpuDevice, float>;
template struct DenseCrf<Eigen::GpuDevice, double>;

}  // namespace functor
}  // namespace kseg

#endif  // GOOGLE_CUDA
