// Functors of the FFT convolution ops, specialised per device.
//
// The CPU specialisations live in fft_conv_op.cc, the GPU ones in fft_conv_op_gpu.cu.cc.
// All compute cross-correlations (as tf.nn.conv2d does) with stride 1 and dilation 1, NHWC
// images and kernels in the tf.nn.conv2d layout [kh, kw, cin, cout]:
//   output[b, y, x, o] = sum_{i, j, c} input[b, y + i - pad_top, x + j - pad_left, c] * kernel[i,
//   j, c, o]
// padding_same: SAME (out = in, pad_top = (kh - 1) / 2, pad_left = (kw - 1) / 2), else VALID
// (out = in - k + 1, no padding). Shapes are validated by the op before a functor runs.
#ifndef KSEG_OPS_CC_KERNELS_FFT_CONV_OP_H_
#define KSEG_OPS_CC_KERNELS_FFT_CONV_OP_H_

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

// Follows the index in the message of a non-finite input (CPU and GPU kernels).
constexpr char kFftNeedsFinite[] = "; the FFT convolution needs finite inputs";

namespace functor {

// Forward: input [batch, h, w, cin], kernel [kh, kw, cin, cout] -> output [batch, out_h, out_w,
// cout]. Gradient with respect to the input: grad_output [batch, out_h, out_w, cout] -> grad_input
// [batch, h, w, cin]. Gradient with respect to the kernel: input, grad_output -> grad_kernel [kh,
// kw, cin, cout].
#define KSEG_FFT_CONV_FUNCTORS(DEVICE)                                                       \
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DEVICE& d, const T* input, \
                          const T* kernel, int64_t batch, int64_t h, int64_t w, int64_t cin, \
                          int64_t kh, int64_t kw, int64_t cout, bool padding_same, T* output);
#define KSEG_FFT_CONV_BACKPROP_INPUT(DEVICE)                                                       \
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DEVICE& d, const T* grad_output, \
                          const T* kernel, int64_t batch, int64_t h, int64_t w, int64_t cin,       \
                          int64_t kh, int64_t kw, int64_t cout, bool padding_same, T* grad_input);
#define KSEG_FFT_CONV_BACKPROP_FILTER(DEVICE)                                                     \
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DEVICE& d, const T* input,      \
                          const T* grad_output, int64_t batch, int64_t h, int64_t w, int64_t cin, \
                          int64_t kh, int64_t kw, int64_t cout, bool padding_same,                \
                          T* grad_kernel);

template <typename Device, typename T>
struct FftConv2D {
  KSEG_FFT_CONV_FUNCTORS(Device)
};
template <typename Device, typename T>
struct FftConv2DBackpropInput {
  KSEG_FFT_CONV_BACKPROP_INPUT(Device)
};
template <typename Device, typename T>
struct FftConv2DBackpropFilter {
  KSEG_FFT_CONV_BACKPROP_FILTER(Device)
};

template <typename T>
struct FftConv2D<Eigen::ThreadPoolDevice, T> {
  KSEG_FFT_CONV_FUNCTORS(Eigen::ThreadPoolDevice)
};
template <typename T>
struct FftConv2DBackpropInput<Eigen::ThreadPoolDevice, T> {
  KSEG_FFT_CONV_BACKPROP_INPUT(Eigen::ThreadPoolDevice)
};
template <typename T>
struct FftConv2DBackpropFilter<Eigen::ThreadPoolDevice, T> {
  KSEG_FFT_CONV_BACKPROP_FILTER(Eigen::ThreadPoolDevice)
};

#if GOOGLE_CUDA
template <typename T>
struct FftConv2D<Eigen::GpuDevice, T> {
  KSEG_FFT_CONV_FUNCTORS(Eigen::GpuDevice)
};
template <typename T>
struct FftConv2DBackpropInput<Eigen::GpuDevice, T> {
  KSEG_FFT_CONV_BACKPROP_INPUT(Eigen::GpuDevice)
};
template <typename T>
struct FftConv2DBackpropFilter<Eigen::GpuDevice, T> {
  KSEG_FFT_CONV_BACKPROP_FILTER(Eigen::GpuDevice)
};
#endif  // GOOGLE_CUDA

#undef KSEG_FFT_CONV_FUNCTORS
#undef KSEG_FFT_CONV_BACKPROP_INPUT
#undef KSEG_FFT_CONV_BACKPROP_FILTER

}  // namespace functor
}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_FFT_CONV_OP_H_
