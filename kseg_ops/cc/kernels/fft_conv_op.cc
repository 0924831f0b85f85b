// CPU kernels of Kseg>FftConv2D, Kseg>FftConv2DBackpropInput and Kseg>FftConv2DBackpropFilter
// (and the GPU kernels' registration when built with CUDA).
//
// The FFT core is compiled three times: for the baseline ISA of the build and, on x86-64 with
// GCC, for AVX2+FMA and AVX-512; the fastest one the running CPU supports is picked at run time,
// so one binary runs everywhere and still uses wide vectors where they exist.
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif
#include "kseg_ops/cc/kernels/fft_conv_op.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/common/cpu_features.h"
#include "kseg_ops/cc/common/non_finite.h"
#include "kseg_ops/cc/fft/fft_conv_core.h"
#include "kseg_ops/cc/kernels/cpu_parallel.h"
#include "kseg_ops/cc/kernels/op_limits.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "unsupported/Eigen/CXX11/Tensor"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define KSEG_FFT_MULTI_ISA 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#undef KSEG_FFT_ISA
#define KSEG_FFT_ISA avx2
#undef KSEG_FFT_VECTOR_BYTES
#define KSEG_FFT_VECTOR_BYTES 32
#include "kseg_ops/cc/fft/fft_conv_impl.inc"
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")
#undef KSEG_FFT_ISA
#define KSEG_FFT_ISA avx512
#undef KSEG_FFT_VECTOR_BYTES
#define KSEG_FFT_VECTOR_BYTES 64
#include "kseg_ops/cc/fft/fft_conv_impl.inc"
#pragma GCC pop_options
#endif

namespace kseg {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa BestIsa() {
#if KSEG_FFT_MULTI_ISA
  if (cpu::HasAvx512()) return Isa::kAvx512;
  if (cpu::HasAvx2Fma()) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

// FFT spreads a NaN or infinity over a whole tile (a direct convolution keeps it local), so
// non-finite values are refused up front with the tensor's name and the first bad index.
template <typename T>
absl::Status CheckFinite(const char* name, const T* data, int64_t n, const CPUDevice& d) {
  const int64_t bad = FirstNonFinite(data, n, MakeParallelFor(d));
  if (bad < 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      NonFiniteMessage(name, bad, {}, static_cast<double>(data[bad]), kFftNeedsFinite));
}

}  // namespace

namespace functor {

#if KSEG_FFT_MULTI_ISA
#define KSEG_FFT_DISPATCH(call)                       \
  switch (BestIsa()) {                                \
    case Isa::kAvx512:                                \
      return CoreStatus(control, fft::avx512::call);  \
    case Isa::kAvx2:                                  \
      return CoreStatus(control, fft::avx2::call);    \
    default:                                          \
      return CoreStatus(control, fft::generic::call); \
  }
#else
#define KSEG_FFT_DISPATCH(call) return CoreStatus(control, fft::generic::call);
#endif

// The shapes an FFT error names.
inline std::string FftSizes(int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t kh,
                            int64_t kw, int64_t cout) {
  return absl::StrCat("input.shape=[", batch, ", ", h, ", ", w, ", ", cin, "], filter.shape=[", kh,
                      ", ", kw, ", ", cin, ", ", cout, "]");
}

// Shards of one parallel_for run on the pool's threads and on the caller.
inline int64_t Shards(const CPUDevice& d) { return d.numThreads() + 1; }

template <typename T>
absl::Status FftConv2D<CPUDevice, T>::operator()(OpKernelContext* ctx, const CPUDevice& d,
                                                 const T* input, const T* kernel, int64_t batch,
                                                 int64_t h, int64_t w, int64_t cin, int64_t kh,
                                                 int64_t kw, int64_t cout, bool padding_same,
                                                 T* output) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const fft::TilePlan tp = fft::ChooseTilePlan(g, sizeof(T), d.numThreads());
  const std::string sizes = FftSizes(batch, h, w, cin, kh, kw, cout);
  RunControl control = MakeRunControl(ctx);
  const std::string error = CheckBudget(&control, fft::CorrelateBytes(g, tp, sizeof(T), Shards(d)),
                                        "the FFT convolution", sizes);
  if (!error.empty()) return CoreStatus(control, error);
  const fft::ParallelFor parallel_for = MakeParallelFor(d);
  return CatchBadAlloc("the FFT convolution", sizes, [&]() -> absl::Status {
    KSEG_FFT_DISPATCH(Correlate<T>(g, tp, input, kernel, output, parallel_for, &control));
  });
}

template <typename T>
absl::Status FftConv2DBackpropInput<CPUDevice, T>::operator()(
    OpKernelContext* ctx, const CPUDevice& d, const T* grad_output, const T* kernel, int64_t batch,
    int64_t h, int64_t w, int64_t cin, int64_t kh, int64_t kw, int64_t cout, bool padding_same,
    T* grad_input) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  // The input gradient is a correlation on the transposed geometry, plus the flipped kernel.
  const fft::Geometry t = fft::InputGradientGeometry(g);
  const int64_t bytes = fft::CorrelateBytes(t, fft::ChooseTilePlan(t, sizeof(T), d.numThreads()),
                                            sizeof(T), Shards(d)) +
                        fft::SaturatedBytes(static_cast<double>(kh) * kw * cin * cout, sizeof(T));
  const std::string sizes = FftSizes(batch, h, w, cin, kh, kw, cout);
  RunControl control = MakeRunControl(ctx);
  const std::string error =
      CheckBudget(&control, bytes, "the FFT convolution's input gradient", sizes);
  if (!error.empty()) return CoreStatus(control, error);
  const fft::ParallelFor parallel_for = MakeParallelFor(d);
  return CatchBadAlloc("the FFT convolution's input gradient", sizes, [&]() -> absl::Status {
    KSEG_FFT_DISPATCH(CorrelateBackpropInput<T>(g, grad_output, kernel, grad_input, d.numThreads(),
                                                parallel_for, &control));
  });
}

template <typename T>
absl::Status FftConv2DBackpropFilter<CPUDevice, T>::operator()(OpKernelContext* ctx,
                                                               const CPUDevice& d, const T* input,
                                                               const T* grad_output, int64_t batch,
                                                               int64_t h, int64_t w, int64_t cin,
                                                               int64_t kh, int64_t kw, int64_t cout,
                                                               bool padding_same, T* grad_kernel) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const fft::TilePlan tp = fft::ChooseTilePlan(g, sizeof(T), d.numThreads());
  const std::string sizes = FftSizes(batch, h, w, cin, kh, kw, cout);
  RunControl control = MakeRunControl(ctx);
  const std::string error =
      CheckBudget(&control, fft::BackpropFilterBytes(g, tp, sizeof(T), Shards(d)),
                  "the FFT convolution's filter gradient", sizes);
  if (!error.empty()) return CoreStatus(control, error);
  const fft::ParallelFor parallel_for = MakeParallelFor(d);
  return CatchBadAlloc("the FFT convolution's filter gradient", sizes, [&]() -> absl::Status {
    KSEG_FFT_DISPATCH(
        CorrelateBackpropFilter<T>(g, tp, input, grad_output, grad_kernel, parallel_for, &control));
  });
}

#undef KSEG_FFT_DISPATCH

template struct FftConv2D<CPUDevice, float>;
template struct FftConv2D<CPUDevice, double>;
template struct FftConv2DBackpropInput<CPUDevice, float>;
template struct FftConv2DBackpropInput<CPUDevice, double>;
template struct FftConv2DBackpropFilter<CPUDevice, float>;
template struct FftConv2DBackpropFilter<CPUDevice, double>;

}  // namespace functor

namespace {

// Shapes shared by the three ops, validated with errors that name the tensor and the value.
struct ConvShapes {
  int64_t batch, h, w, cin, kh, kw, cout, out_h, out_w;
};

absl::Status ReadShapes(const Tensor& input, const Tensor& kernel, bool padding_same,
                        ConvShapes* s) {
  if (input.dims() != 4)
    return absl::InvalidArgumentError(
        absl::StrCat("input must have rank 4 [batch, height, width, channels]. Received: "
                     "input.shape=",
                     input.shape().DebugString()));
  if (kernel.dims() != 4)
    return absl::InvalidArgumentError(
        absl::StrCat("filter must have rank 4 [kernel_height, kernel_width, in_channels, "
                     "out_channels]. Received: filter.shape=",
                     kernel.shape().DebugString()));
  s->batch = input.dim_size(0);
  s->h = input.dim_size(1);
  s->w = input.dim_size(2);
  s->cin = input.dim_size(3);
  s->kh = kernel.dim_size(0);
  s->kw = kernel.dim_size(1);
  s->cout = kernel.dim_size(3);
  if (kernel.dim_size(2) != s->cin)
    return absl::InvalidArgumentError(
        absl::StrCat("filter expects ", kernel.dim_size(2), " input channels but input has ",
                     s->cin, ". Received: filter.shape=", kernel.shape().DebugString(),
                     ", input.shape=", input.shape().DebugString()));
  if (s->h < 1 || s->w < 1 || s->cin < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("input height, width and channels must be >= 1. Received: input.shape=",
                     input.shape().DebugString()));
  if (s->kh < 1 || s->kw < 1 || s->cout < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("filter height, width and out_channels must be >= 1. Received: filter.shape=",
                     kernel.shape().DebugString()));
  if (!padding_same && (s->kh > s->h || s->kw > s->w))
    return absl::InvalidArgumentError(
        absl::StrCat("with padding VALID the filter (", s->kh, "x", s->kw,
                     ") must not be larger than the input image (", s->h, "x", s->w,
                     "). Received: filter.shape=", kernel.shape().DebugString(),
                     ", input.shape=", input.shape().DebugString()));
  // Keeps every index the core computes (tile buffers, spectra) far inside int64.
  const double pixels = static_cast<double>(s->h) * static_cast<double>(s->w) *
                        static_cast<double>(std::max(s->cin, s->cout));
  const double taps = static_cast<double>(s->kh) * static_cast<double>(s->kw) *
                      static_cast<double>(s->cin) * static_cast<double>(s->cout);
  if (pixels > 1e12 || taps > 1e10)
    return absl::InvalidArgumentError(
        absl::StrCat("input and filter are too large for the FFT convolution. Received: "
                     "input.shape=",
                     input.shape().DebugString(), ", filter.shape=", kernel.shape().DebugString()));
  s->out_h = padding_same ? s->h : s->h - s->kh + 1;
  s->out_w = padding_same ? s->w : s->w - s->kw + 1;
  return absl::OkStatus();
}

absl::Status ReadPadding(OpKernelConstruction* ctx, bool* padding_same) {
  std::string padding;
  TF_RETURN_IF_ERROR(ctx->GetAttr("padding", &padding));
  *padding_same = padding == "SAME";
  return absl::OkStatus();
}

}  // namespace

template <typename Device, typename T>
class FftConv2DOp : public OpKernel {
 public:
  explicit FftConv2DOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadPadding(ctx, &same_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    ConvShapes s;
    OP_REQUIRES_OK(ctx, ReadShapes(input, kernel, same_, &s));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {s.batch, s.out_h, s.out_w, s.cout}, &output));
    if (output->NumElements() == 0) return;
    if (std::is_same<Device, CPUDevice>::value) {
      OP_REQUIRES_OK(ctx, CheckFinite("input", input.flat<T>().data(), input.NumElements(),
                                      ctx->eigen_device<CPUDevice>()));
      OP_REQUIRES_OK(ctx, CheckFinite("filter", kernel.flat<T>().data(), kernel.NumElements(),
                                      ctx->eigen_device<CPUDevice>()));
    }
    OP_REQUIRES_OK(
        ctx, functor::FftConv2D<Device, T>()(
                 ctx, ctx->eigen_device<Device>(), input.flat<T>().data(), kernel.flat<T>().data(),
                 s.batch, s.h, s.w, s.cin, s.kh, s.kw, s.cout, same_, output->flat<T>().data()));
  }

 private:
  bool same_ = true;
};

// Inputs: the forward input (for its shape only), the filter and the output gradient.
template <typename Device, typename T>
class FftConv2DBackpropInputOp : public OpKernel {
 public:
  explicit FftConv2DBackpropInputOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadPadding(ctx, &same_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    const Tensor& grad_output = ctx->input(2);
    ConvShapes s;
    OP_REQUIRES_OK(ctx, ReadShapes(input, kernel, same_, &s));
    const tensorflow::TensorShape want({s.batch, s.out_h, s.out_w, s.cout});
    OP_REQUIRES(ctx, grad_output.shape() == want,
                absl::InvalidArgumentError(absl::StrCat(
                    "grad_output must have shape ", want.DebugString(),
                    ". Received: grad_output.shape=", grad_output.shape().DebugString())));
    Tensor* grad_input = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, input.shape(), &grad_input));
    if (grad_input->NumElements() == 0) return;
    if (std::is_same<Device, CPUDevice>::value) {
      OP_REQUIRES_OK(ctx, CheckFinite("filter", kernel.flat<T>().data(), kernel.NumElements(),
                                      ctx->eigen_device<CPUDevice>()));
      OP_REQUIRES_OK(ctx, CheckFinite("grad_output", grad_output.flat<T>().data(),
                                      grad_output.NumElements(), ctx->eigen_device<CPUDevice>()));
    }
    OP_REQUIRES_OK(ctx, functor::FftConv2DBackpropInput<Device, T>()(
                            ctx, ctx->eigen_device<Device>(), grad_output.flat<T>().data(),
                            kernel.flat<T>().data(), s.batch, s.h, s.w, s.cin, s.kh, s.kw, s.cout,
                            same_, grad_input->flat<T>().data()));
  }

 private:
  bool same_ = true;
};

// Inputs: the forward input, the filter (for its shape only) and the output gradient.
template <typename Device, typename T>
class FftConv2DBackpropFilterOp : public OpKernel {
 public:
  explicit FftConv2DBackpropFilterOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadPadding(ctx, &same_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    const Tensor& grad_output = ctx->input(2);
    ConvShapes s;
    OP_REQUIRES_OK(ctx, ReadShapes(input, kernel, same_, &s));
    const tensorflow::TensorShape want({s.batch, s.out_h, s.out_w, s.cout});
    OP_REQUIRES(ctx, grad_output.shape() == want,
                absl::InvalidArgumentError(absl::StrCat(
                    "grad_output must have shape ", want.DebugString(),
                    ". Received: grad_output.shape=", grad_output.shape().DebugString())));
    Tensor* grad_kernel = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, kernel.shape(), &grad_kernel));
    if (grad_kernel->NumElements() == 0) return;
    // A host write would touch GPU memory: on the GPU the functor zero-fills empty inputs itself.
    if (input.NumElements() == 0 && std::is_same<Device, CPUDevice>::value) {
      grad_kernel->flat<T>().setZero();
      return;
    }
    if (std::is_same<Device, CPUDevice>::value) {
      OP_REQUIRES_OK(ctx, CheckFinite("input", input.flat<T>().data(), input.NumElements(),
                                      ctx->eigen_device<CPUDevice>()));
      OP_REQUIRES_OK(ctx, CheckFinite("grad_output", grad_output.flat<T>().data(),
                                      grad_output.NumElements(), ctx->eigen_device<CPUDevice>()));
    }
    OP_REQUIRES_OK(ctx, functor::FftConv2DBackpropFilter<Device, T>()(
                            ctx, ctx->eigen_device<Device>(), input.flat<T>().data(),
                            grad_output.flat<T>().data(), s.batch, s.h, s.w, s.cin, s.kh, s.kw,
                            s.cout, same_, grad_kernel->flat<T>().data()));
  }

 private:
  bool same_ = true;
};

#define KSEG_REGISTER(DEVICE, DEVICE_TYPE, T)                                           \
  REGISTER_KERNEL_BUILDER(Name("Kseg>FftConv2D").Device(DEVICE).TypeConstraint<T>("T"), \
                          FftConv2DOp<DEVICE_TYPE, T>);                                 \
  REGISTER_KERNEL_BUILDER(                                                              \
      Name("Kseg>FftConv2DBackpropInput").Device(DEVICE).TypeConstraint<T>("T"),        \
      FftConv2DBackpropInputOp<DEVICE_TYPE, T>);                                        \
  REGISTER_KERNEL_BUILDER(                                                              \
      Name("Kseg>FftConv2DBackpropFilter").Device(DEVICE).TypeConstraint<T>("T"),       \
      FftConv2DBackpropFilterOp<DEVICE_TYPE, T>);
KSEG_REGISTER(::tensorflow::DEVICE_CPU, CPUDevice, float);
KSEG_REGISTER(::tensorflow::DEVICE_CPU, CPUDevice, double);
#if GOOGLE_CUDA
KSEG_REGISTER(::tensorflow::DEVICE_GPU, GPUDevice, float);
KSEG_REGISTER(::tensorflow::DEVICE_GPU, GPUDevice, double);
#endif  // GOOGLE_CUDA
#undef KSEG_REGISTER

}  // namespace kseg
