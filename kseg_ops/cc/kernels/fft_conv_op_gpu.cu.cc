// GPU functors of Kseg>FftConv2D and its two gradient ops. The tiling, packing kernels and the
// channel contraction live in kseg_ops/cc/fft/fft_conv_gpu.cuh (TF-free, tested on the host in
// emulation); this file adds cuFFT, TensorFlow memory and the input checks. The tiling is the
// one the CPU kernel picks (fft::ChooseTilePlan), so both devices do the same arithmetic up to
// the FFT implementation.
//
// cuFFT is loaded at run time (dlopen) rather than linked: the op library must load on
// tensorflow-cpu, where no cuFFT exists, and on the GPU wheel it finds the libcufft that
// TensorFlow itself uses (already loaded, or beside TensorFlow under nvidia/cufft/lib).
#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/fft/fft_conv_core.h"
#include "kseg_ops/cc/fft/fft_conv_gpu.cuh"
#include "kseg_ops/cc/kernels/fft_conv_op.h"
#include "kseg_ops/cc/kernels/lattice_gpu_glue.cu.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kseg {
namespace {

using gpu_glue::AllocateArray;
using gpu_glue::CudaStatus;
using lattice::gpu::BlocksFor;
using lattice::gpu::kThreadsPerBlock;

// ---------------------------------------------------------------------------------------------
// cuFFT, resolved at run time. Prototypes and constants as in cufft.h (stable since CUDA 8).

using CufftHandle = int;
constexpr int kCufftSuccess = 0;
constexpr int kCufftR2C = 0x2a, kCufftC2R = 0x2c, kCufftD2Z = 0x6a, kCufftZ2D = 0x6c;

struct CufftApi {
  int (*create)(CufftHandle*) = nullptr;
  int (*make_plan_many64)(CufftHandle, int, long long*, long long*, long long, long long,
                          long long*, long long, long long, int, long long, size_t*) = nullptr;
  int (*set_auto_allocation)(CufftHandle, int) = nullptr;
  int (*set_work_area)(CufftHandle, void*) = nullptr;
  int (*set_stream)(CufftHandle, cudaStream_t) = nullptr;
  int (*exec_r2c)(CufftHandle, float*, float2*) = nullptr;
  int (*exec_c2r)(CufftHandle, float2*, float*) = nullptr;
  int (*exec_d2z)(CufftHandle, double*, double2*) = nullptr;
  int (*exec_z2d)(CufftHandle, double2*, double*) = nullptr;
  int (*destroy)(CufftHandle) = nullptr;
  std::string error;  // empty when loaded
};

std::string DirectoryOf(const void* symbol) {
  Dl_info info;
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "";
  std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

CufftApi LoadCufft() {
  CufftApi api;
  std::vector<std::string> candidates;
  const char* versions[] = {"libcufft.so.11", "libcufft.so.12", "libcufft.so.10", "libcufft.so"};
  for (const char* name : versions) candidates.push_back(name);
  // pip layout: site-packages/{tensorflow,kseg_ops,nvidia/cufft/lib}.
  const std::string tf_dir = DirectoryOf(dlsym(RTLD_DEFAULT, "TF_AllocateTemp"));
  const std::string own_dir = DirectoryOf(reinterpret_cast<const void*>(&DirectoryOf));
  for (const std::string& dir : {tf_dir, own_dir}) {
    if (dir.empty()) continue;
    for (const char* name : versions) candidates.push_back(dir + "/../nvidia/cufft/lib/" + name);
  }
  void* lib = nullptr;
  for (const std::string& c : candidates) {
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
  }
  if (lib == nullptr) {
    api.error =
        "cuFFT (libcufft.so.11 or .12) could not be loaded; install TensorFlow's CUDA libraries "
        "(pip install \"tensorflow[and-cuda]\") or add the directory holding libcufft to "
        "LD_LIBRARY_PATH";
    return api;
  }
  bool ok = true;
  auto bind = [&](auto* slot, const char* name) {
    void* f = dlsym(lib, name);
    if (f == nullptr) ok = false;
    *slot = reinterpret_cast<std::remove_pointer_t<decltype(slot)>>(f);
  };
  bind(&api.create, "cufftCreate");
  bind(&api.make_plan_many64, "cufftMakePlanMany64");
  bind(&api.set_auto_allocation, "cufftSetAutoAllocation");
  bind(&api.set_work_area, "cufftSetWorkArea");
  bind(&api.set_stream, "cufftSetStream");
  bind(&api.exec_r2c, "cufftExecR2C");
  bind(&api.exec_c2r, "cufftExecC2R");
  bind(&api.exec_d2z, "cufftExecD2Z");
  bind(&api.exec_z2d, "cufftExecZ2D");
  bind(&api.destroy, "cufftDestroy");
  if (!ok) api.error = "the loaded cuFFT library lacks cufftMakePlanMany64 or another entry point";
  return api;
}

const CufftApi& Cufft() {
  static const CufftApi* api = new CufftApi(LoadCufft());
  return *api;
}

absl::Status CufftStatus(int result, const char* what) {
  if (result == kCufftSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuFFT error ", result, " in ", what));
}

template <typename T>
struct Complex;
template <>
struct Complex<float> {
  using Type = float2;
  static constexpr int kForward = kCufftR2C, kInverse = kCufftC2R;
};
template <>
struct Complex<double> {
  using Type = double2;
  static constexpr int kForward = kCufftD2Z, kInverse = kCufftZ2D;
};

int ExecForward(const CufftApi& api, CufftHandle h, float* in, float2* out) {
  return api.exec_r2c(h, in, out);
}
int ExecForward(const CufftApi& api, CufftHandle h, double* in, double2* out) {
  return api.exec_d2z(h, in, out);
}
int ExecInverse(const CufftApi& api, CufftHandle h, float2* in, float* out) {
  return api.exec_c2r(h, in, out);
}
int ExecInverse(const CufftApi& api, CufftHandle h, double2* in, double* out) {
  return api.exec_z2d(h, in, out);
}

// A batched 2-D P x Q plan (contiguous layout) without its own work area.
class FftPlan {
 public:
  FftPlan() = default;
  FftPlan(const FftPlan&) = delete;
  FftPlan& operator=(const FftPlan&) = delete;
  ~FftPlan() {
    if (created_) api_->destroy(handle_);
  }

  absl::Status Make(const CufftApi& api, int64_t p, int64_t q, int type, int64_t batch,
                    size_t* work_bytes) {
    api_ = &api;
    KSEG_GPU_RETURN_IF_ERROR(CufftStatus(api.create(&handle_), "cufftCreate"));
    created_ = true;
    KSEG_GPU_RETURN_IF_ERROR(
        CufftStatus(api.set_auto_allocation(handle_, 0), "cufftSetAutoAllocation"));
    long long dims[2] = {p, q};
    return CufftStatus(api.make_plan_many64(handle_, 2, dims, nullptr, 1, 0, nullptr, 1, 0, type,
                                            batch, work_bytes),
                       "cufftMakePlanMany64");
  }

  absl::Status Bind(cudaStream_t stream, void* work) {
    KSEG_GPU_RETURN_IF_ERROR(CufftStatus(api_->set_stream(handle_, stream), "cufftSetStream"));
    return CufftStatus(api_->set_work_area(handle_, work), "cufftSetWorkArea");
  }

  CufftHandle handle() const { return handle_; }

 private:
  const CufftApi* api_ = nullptr;
  CufftHandle handle_ = 0;
  bool created_ = false;
};

// ---------------------------------------------------------------------------------------------
// Host side.

// Refuses NaN/Inf like the CPU kernel (an FFT would spread one over a whole tile).
template <typename T>
absl::Status CheckFiniteOnDevice(tensorflow::OpKernelContext* ctx, cudaStream_t stream,
                                 const char* name_a, const T* a, int64_t size_a, const char* name_b,
                                 const T* b, int64_t size_b) {
  int64_t index[2];
  T value[2];
  KSEG_GPU_RETURN_IF_ERROR(
      gpu_glue::FindNonFinite(ctx, stream, a, size_a, b, size_b, index, value));
  for (int which = 0; which < 2; ++which) {
    if (index[which] >= 0)
      return absl::InvalidArgumentError(NonFiniteMessage(which == 0 ? name_a : name_b, index[which],
                                                         {}, static_cast<double>(value[which]),
                                                         kFftNeedsFinite));
  }
  return absl::OkStatus();
}

// The transforms of fft_conv_gpu.cuh with cuFFT plans on the op's stream and one shared work
// area. kernel_gradient selects which of them run forward or inverse.
template <typename T>
class CufftTransforms {
 public:
  using C = typename Complex<T>::Type;

  absl::Status Init(tensorflow::OpKernelContext* ctx, cudaStream_t stream, const CufftApi& api,
                    const fft::Geometry& g, const fft::gpu::GpuPlan& plan, bool kernel_gradient) {
    api_ = &api;
    const int fwd = Complex<T>::kForward, inv = Complex<T>::kInverse;
    size_t work[3] = {0, 0, 0};
    KSEG_GPU_RETURN_IF_ERROR(
        kernel_.Make(api, plan.p, plan.q, kernel_gradient ? inv : fwd, g.cin * g.cout, &work[0]));
    KSEG_GPU_RETURN_IF_ERROR(input_.Make(api, plan.p, plan.q, fwd, plan.group * g.cin, &work[1]));
    KSEG_GPU_RETURN_IF_ERROR(output_.Make(api, plan.p, plan.q, kernel_gradient ? fwd : inv,
                                          plan.group * g.cout, &work[2]));
    void* area = nullptr;
    KSEG_GPU_RETURN_IF_ERROR(gpu_glue::AllocateBytes(
        ctx, static_cast<int64_t>(std::max({work[0], work[1], work[2]})), &work_, &area));
    KSEG_GPU_RETURN_IF_ERROR(kernel_.Bind(stream, area));
    KSEG_GPU_RETURN_IF_ERROR(input_.Bind(stream, area));
    return output_.Bind(stream, area);
  }

  std::string KernelForward(T* real, C* spec) {
    return Check(ExecForward(*api_, kernel_.handle(), real, spec), "kernel transform");
  }
  std::string KernelInverse(C* spec, T* real) {
    return Check(ExecInverse(*api_, kernel_.handle(), spec, real), "kernel inverse transform");
  }
  std::string InputForward(T* real, C* spec) {
    return Check(ExecForward(*api_, input_.handle(), real, spec), "input transform");
  }
  std::string OutputForward(T* real, C* spec) {
    return Check(ExecForward(*api_, output_.handle(), real, spec), "output transform");
  }
  std::string OutputInverse(C* spec, T* real) {
    return Check(ExecInverse(*api_, output_.handle(), spec, real), "output inverse transform");
  }

 private:
  static std::string Check(int result, const char* what) {
    return result == kCufftSuccess ? std::string()
                                   : absl::StrCat("cuFFT error ", result, " in the ", what);
  }
  const CufftApi* api_ = nullptr;
  FftPlan kernel_, input_, output_;
  tensorflow::Tensor work_;
};

// Runs a forward-type correlation or the kernel gradient with cuFFT and temporary memory.
template <typename T>
absl::Status RunOnGpu(tensorflow::OpKernelContext* ctx, cudaStream_t stream, const fft::Geometry& g,
                      bool kernel_gradient, const T* a, const T* b, bool flip, T* out) {
  const CufftApi& api = Cufft();
  if (!api.error.empty()) return absl::FailedPreconditionError(api.error);
  const fft::TilePlan tp = fft::ChooseTilePlan(g, sizeof(T), 1);
  const fft::gpu::GpuPlan plan = fft::gpu::MakeGpuPlan<T>(g, tp);
  fft::gpu::Buffers<T> buffers;
  tensorflow::Tensor holder;
  void* base = nullptr;
  KSEG_GPU_RETURN_IF_ERROR(gpu_glue::AllocateBytes(
      ctx, fft::gpu::CarveBuffers<T>(nullptr, g, plan, &buffers), &holder, &base));
  fft::gpu::CarveBuffers<T>(base, g, plan, &buffers);
  CufftTransforms<T> transforms;
  KSEG_GPU_RETURN_IF_ERROR(transforms.Init(ctx, stream, api, g, plan, kernel_gradient));
  const std::string error =
      kernel_gradient
          ? fft::gpu::RunKernelGradient<T>(stream, g, plan, a, b, out, buffers, transforms)
          : fft::gpu::RunCorrelation<T>(stream, g, plan, a, b, flip, out, buffers, transforms);
  // The plans are destroyed on return: no transform may still be queued then.
  const absl::Status synced = CudaStatus(cudaStreamSynchronize(stream), "FFT convolution");
  if (!error.empty()) return absl::InternalError("FFT convolution on the GPU: " + error);
  return synced;
}

}  // namespace

namespace functor {

template <typename T>
absl::Status FftConv2D<Eigen::GpuDevice, T>::operator()(tensorflow::OpKernelContext* ctx,
                                                        const Eigen::GpuDevice& d, const T* input,
                                                        const T* kernel, int64_t batch, int64_t h,
                                                        int64_t w, int64_t cin, int64_t kh,
                                                        int64_t kw, int64_t cout, bool padding_same,
                                                        T* output) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const std::string error = fft::ValidateGeometry(g);
  if (!error.empty()) return absl::InvalidArgumentError(error);
  if (batch == 0) return absl::OkStatus();
  KSEG_GPU_RETURN_IF_ERROR(CheckFiniteOnDevice(ctx, d.stream(), "input", input, batch * h * w * cin,
                                               "filter", kernel, kh * kw * cin * cout));
  return RunOnGpu<T>(ctx, d.stream(), g, /*kernel_gradient=*/false, input, kernel,
                     /*flip=*/false, output);
}

template <typename T>
absl::Status FftConv2DBackpropInput<Eigen::GpuDevice, T>::operator()(
    tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d, const T* grad_output,
    const T* kernel, int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t kh, int64_t kw,
    int64_t cout, bool padding_same, T* grad_input) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const std::string error = fft::ValidateGeometry(g);
  if (!error.empty()) return absl::InvalidArgumentError(error);
  if (batch == 0) return absl::OkStatus();
  KSEG_GPU_RETURN_IF_ERROR(CheckFiniteOnDevice(ctx, d.stream(), "filter", kernel,
                                               kh * kw * cin * cout, "grad_output", grad_output,
                                               batch * g.out_h * g.out_w * cout));
  // grad_input = correlation of grad_output with the flipped, channel-transposed kernel.
  return RunOnGpu<T>(ctx, d.stream(), fft::InputGradientGeometry(g), /*kernel_gradient=*/false,
                     grad_output, kernel, /*flip=*/true, grad_input);
}

template <typename T>
absl::Status FftConv2DBackpropFilter<Eigen::GpuDevice, T>::operator()(
    tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d, const T* input,
    const T* grad_output, int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t kh, int64_t kw,
    int64_t cout, bool padding_same, T* grad_kernel) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const std::string error = fft::ValidateGeometry(g);
  if (!error.empty()) return absl::InvalidArgumentError(error);
  if (batch == 0)
    return CudaStatus(cudaMemsetAsync(grad_kernel, 0, sizeof(T) * kh * kw * cin * cout, d.stream()),
                      "FFT convolution kernel gradient");
  KSEG_GPU_RETURN_IF_ERROR(CheckFiniteOnDevice(ctx, d.stream(), "input", input, batch * h * w * cin,
                                               "grad_output", grad_output,
                                               batch * g.out_h * g.out_w * cout));
  return RunOnGpu<T>(ctx, d.stream(), g, /*kernel_gradient=*/true, input, grad_output,
                     /*flip=*/false, grad_kernel);
}

template struct FftConv2D<Eigen::GpuDevice, float>;
template struct FftConv2D<Eigen::GpuDevice, double>;
template struct FftConv2DBackpropInput<Eigen::GpuDevice, float>;
template struct FftConv2DBackpropInput<Eigen::GpuDevice, double>;
template struct FftConv2DBackpropFilter<Eigen::GpuDevice, float>;
template struct FftConv2DBackpropFilter<Eigen::GpuDevice, double>;

}  // namespace functor
}  // namespace kseg

#endif  // GOOGLE_CUDA
