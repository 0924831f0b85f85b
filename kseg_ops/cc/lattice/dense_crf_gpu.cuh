// CUDA mean-field inference of the dense CRF (see dense_crf_params.h for the math), free of
// TensorFlow: the caller builds the two lattices and passes a filter callback for each, so the
// same code runs on the GPU (dense_crf_op_gpu.cu.cc) and on the host in emulation (tests).
#ifndef KSEG_OPS_CC_LATTICE_DENSE_CRF_GPU_CUH_
#define KSEG_OPS_CC_LATTICE_DENSE_CRF_GPU_CUH_

#include <cmath>
#include <cstdint>
#include <string>

#include "kseg_ops/cc/lattice/permutohedral_gpu.cuh"

namespace kseg {
namespace crf {
namespace gpu {

using lattice::gpu::BlocksFor;
using lattice::gpu::kThreadsPerBlock;

__device__ inline float ExpOf(float x) { return expf(x); }
__device__ inline double ExpOf(double x) { return exp(x); }

// Lattice features of every pixel, as the CPU kernel computes them: gaussian (x, y) / sxy and
// bilateral (x, y) / sxy, rgb / srgb, with x the column.
template <typename T>
static __global__ void CrfFeaturesKernel(const T* __restrict__ image, int64_t n, int64_t w,
                                         T inv_gs, T inv_bs, T inv_br, T* __restrict__ gaussian,
                                         T* __restrict__ bilateral) {
  KSEG_GRID_LOOP(p, n) {
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
static __global__ void FillKernel(T* __restrict__ data, int64_t size, T value) {
  KSEG_GRID_LOOP(i, size) data[i] = value;
}

// D = L 1 -> D^-1/2 (symmetric) or D^-1 (after), in place.
template <typename T>
static __global__ void NormaliserKernel(T* __restrict__ norm, int64_t n, bool symmetric) {
  KSEG_GRID_LOOP(p, n) {
    norm[p] = symmetric ? T(1) / sqrt(norm[p] + T(1e-20)) : T(1) / (norm[p] + T(1e-20));
  }
}

// q[p, :] = softmax(pairwise[p, :] - unary[p, :]); pairwise may be null (zero).
template <typename T>
static __global__ void SoftmaxKernel(const T* __restrict__ unary, const T* __restrict__ pairwise,
                                     int64_t n, int channels, T* __restrict__ q) {
  KSEG_GRID_LOOP(p, n) {
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

inline std::string LaunchError(cudaError_t err, const char* what) {
  return err == cudaSuccess ? std::string() : std::string("CUDA launch failed in ") + what;
}

template <typename T>
std::string LaunchCrfFeatures(cudaStream_t stream, const T* image, int64_t n, int64_t w,
                              float gaussian_sxy, float bilateral_sxy, float bilateral_srgb,
                              T* gaussian, T* bilateral) {
  const T inv_gs = T(1) / T(gaussian_sxy), inv_bs = T(1) / T(bilateral_sxy),
          inv_br = T(1) / T(bilateral_srgb);
  KSEG_LAUNCH(CrfFeaturesKernel<T>, BlocksFor(n), kThreadsPerBlock, stream, image, n, w, inv_gs,
              inv_bs, inv_br, gaussian, bilateral);
  return LaunchError(cudaGetLastError(), "dense CRF features");
}

struct MeanFieldSettings {
  int iterations = 10;
  float gaussian_compat = 3.f;
  float bilateral_compat = 10.f;
  bool symmetric = true;
};

// Mean-field inference of one image of n pixels once both lattices are built.
//   filter_gaussian / filter_bilateral(in, in_stride, channels, pre_scale, post_scale,
//       post_factor, accumulate, out, out_stride) -> bool: out (+)= post_scale .* post_factor *
//       L(pre_scale .* in) with that lattice (Permutohedral::Filter, not transposed); false stops
//       the inference (the callback keeps the reason).
// Scratch: ones [n], norms [2 n], pairwise [n, channels]. q [n, channels] receives the result.
// Returns an empty string, "filter" when a callback failed, or a launch error.
template <typename T, typename GaussianFilter, typename BilateralFilter>
std::string RunMeanField(cudaStream_t stream, const MeanFieldSettings& s, int64_t n, int channels,
                         const T* unary, T* ones, T* norms, T* pairwise, T* q,
                         GaussianFilter&& filter_gaussian, BilateralFilter&& filter_bilateral) {
  T* norm_g = norms;
  T* norm_b = norms + n;
  KSEG_LAUNCH(FillKernel<T>, BlocksFor(n), kThreadsPerBlock, stream, ones, n, T(1));
  std::string error = LaunchError(cudaGetLastError(), "dense CRF set-up");
  if (!error.empty()) return error;
  // Normalisers from the filter of ones.
  if (!filter_gaussian(static_cast<const T*>(ones), int64_t{1}, 1, static_cast<const T*>(nullptr),
                       static_cast<const T*>(nullptr), T(1), false, norm_g, int64_t{1}) ||
      !filter_bilateral(static_cast<const T*>(ones), int64_t{1}, 1, static_cast<const T*>(nullptr),
                        static_cast<const T*>(nullptr), T(1), false, norm_b, int64_t{1}))
    return "filter";
  KSEG_LAUNCH(NormaliserKernel<T>, BlocksFor(2 * n), kThreadsPerBlock, stream, norms, 2 * n,
              s.symmetric);
  const T* pre_g = s.symmetric ? norm_g : nullptr;
  const T* pre_b = s.symmetric ? norm_b : nullptr;
  // Q0 = softmax(-unary), then the mean-field updates.
  KSEG_LAUNCH(SoftmaxKernel<T>, BlocksFor(n), kThreadsPerBlock, stream, unary,
              static_cast<const T*>(nullptr), n, channels, q);
  error = LaunchError(cudaGetLastError(), "dense CRF softmax");
  for (int it = 0; error.empty() && it < s.iterations; ++it) {
    if (!filter_gaussian(static_cast<const T*>(q), static_cast<int64_t>(channels), channels, pre_g,
                         static_cast<const T*>(norm_g), T(s.gaussian_compat), false, pairwise,
                         static_cast<int64_t>(channels)) ||
        !filter_bilateral(static_cast<const T*>(q), static_cast<int64_t>(channels), channels, pre_b,
                          static_cast<const T*>(norm_b), T(s.bilateral_compat), true, pairwise,
                          static_cast<int64_t>(channels)))
      return "filter";
    KSEG_LAUNCH(SoftmaxKernel<T>, BlocksFor(n), kThreadsPerBlock, stream, unary,
                static_cast<const T*>(pairwise), n, channels, q);
    error = LaunchError(cudaGetLastError(), "dense CRF softmax");
  }
  return error;
}

}  // namespace gpu
}  // namespace crf
}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_DENSE_CRF_GPU_CUH_
