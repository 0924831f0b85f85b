// Functors of the FFT convolution ops, specialised per device.
//
// The CPU specialisations live in fft_conv_op.cc, the GPU ones in fft_conv_op_gpu.cu.cc.
// All three compute cross-correlations (as tf.nn.conv2d does) with stride 1 and dilation 1,
// NHWC images and kernels in the tf.nn.conv2d layout [kh, kw, cin, cout].
#ifndef KSEG_OPS_CC_KERNELS_FFT_CONV_OP_H_
#define KSEG_OPS_CC_KERNELS_FFT_CONV_OP_H_

#include <cstdint>

#include "absl/status/status.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace kseg {
namespace functor {

// output[b, y, x, o] = sum_{i, j, c} input[b, y + i - pad_top, x + j - pad_left, c] * kernel[i, j, c, o]
// input [batch, h, w, cin], kernel [kh, kw, cin, cout], output [batch, out_h, out_w, cout].
// padding_same: SAME (out = in, pad_top = (kh - 1) / 2) else VALID (out = in - k + 1, no padding).
template <typename Device, typename T>
struct FftConv2D {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Device& d, const T* input,
                          const T* kernel, int64_t batch, int64_t h, int64_t w, int64_t cin,
                          int64_t kh, int64_t kw, int64_t cout, bool padding_same, T* output);
};

// Gradient with respect to the input: grad_input [batch, h, w, cin] from
// grad_output [batch, out_h, out_w, cout] (shapes as in the forward pass).
template <typename Device, typename T>
struct FftConv2DBackpropInput {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Device& d, const T* grad_output,
                          const T* kernel, int64_t batch, int64_t h, int64_t w, int64_t cin,
                          int64_t kh, int64_t kw, int64_t cout, bool padding_same, T* grad_input);
};

// Gradient with respect to the kernel: grad_kernel [kh, kw, cin, cout].
template <typename Device, typename T>
struct FftConv2DBackpropFilter {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const Device& d, const T* input,
                          const T* grad_output, int64_t batch, int64_t h, int64_t w, int64_t cin,
                          int64_t kh, int64_t kw, int64_t cout, bool padding_same, T* grad_kernel);
};

}  // namespace functor
}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_FFT_CONV_OP_H_
