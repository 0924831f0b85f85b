// Device functor behind the Kseg>DenseCrf op (mean-field inference of the fully connected CRF,
// Kraehenbuehl & Koltun 2011). The CPU specialisation lives in dense_crf_op.cc, the GPU one in
// dense_crf_op_gpu.cu.cc. Both follow the reference implementation's conventions:
//   Q0 = softmax(-unary); repeat `iterations` times:
//   Q = softmax(-unary + sum_k compat_k * Kn_k(Q)),
// with two kernels k: gaussian, features (x / gaussian_sxy, y / gaussian_sxy), and bilateral,
// features (x / bilateral_sxy, y / bilateral_sxy, r / bilateral_srgb, g / .., b / ..), x the
// column, y the row, rgb in 0..255. L_k is the permutohedral filter of permutohedral.h (the pixel
// itself included) and D_k = diag(L_k 1):
//   kSymmetric: Kn = D^-1/2 L D^-1/2 (the reference's default),
//   kAfter:     Kn = D^-1 L          (DeepLab's 2011 code),
// where D^-1/2 is computed as 1 / sqrt(D + 1e-20) and D^-1 as 1 / (D + 1e-20).
#ifndef KSEG_OPS_CC_KERNELS_DENSE_CRF_OP_H_
#define KSEG_OPS_CC_KERNELS_DENSE_CRF_OP_H_

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

enum class CrfNormalization { kSymmetric = 0, kAfter = 1 };

// What the op's first input holds: unary energies, probabilities (unary = -log(clip(p,
// kProbabilityClip, 1)), as the reference computes it) or logits (unary = -logits).
enum class CrfScores { kUnary = 0, kProbabilities = 1, kLogits = 2 };
constexpr double kProbabilityClip = 1e-5;

struct DenseCrfParams {
  int iterations = 10;
  float gaussian_sxy = 3.f;
  float gaussian_compat = 3.f;
  float bilateral_sxy = 80.f;
  float bilateral_srgb = 13.f;
  float bilateral_compat = 10.f;
  CrfNormalization normalization = CrfNormalization::kSymmetric;
  CrfScores scores = CrfScores::kUnary;
};

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
