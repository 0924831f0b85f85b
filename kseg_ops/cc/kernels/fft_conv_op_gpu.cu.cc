// GPU functors of Kseg>FftConv2D and its two gradient ops: tiled overlap-save FFT
// cross-correlation with cuFFT (batched 2-D real-to-complex / complex-to-real plans) and a
// batched complex channel contraction per frequency. The tiling (FFT size, tile size) is the one
// the CPU kernel picks (fft::ChooseTilePlan), so both devices do the same arithmetic up to the
// FFT implementation.
//
// Per call:   kernel slices --pack--> real [cin*cout, P, Q] --R2C--> spectra K
// per group:  input windows --pack--> real [items*cin, P, Q] --R2C--> X
//             Y[item, o] = sum_c X[item, c] * conj(K[c, o])  (per frequency)
//             Y --C2R--> real --unpack (drop the wrapped border, scale 1/PQ)--> output tiles
// The input gradient is the same correlation with the kernel flipped in space and transposed in
// channels (fft::InputGradientGeometry); the kernel gradient sums conj(G[item, o]) * X[item, c]
// over all tiles of all images.
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
// Kernels.

#define KSEG_FFT_GRID_LOOP(i, total)                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  \
       i < (total); i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Where tiles sit: item = (b * tiles_y + ty) * tiles_x + tx covers rows [ty * tile_h, ..).
struct TileGrid {
  int64_t batch, height, width, channels;  // the NHWC tensor read or written
  int64_t tiles_y, tiles_x, tile_h, tile_w;
  int64_t items() const { return batch * tiles_y * tiles_x; }
};

// dst [group * channels, p, q]: window of item (item_begin + g), rows ty * tile_h + offset_y + u
// for u < window_h (zero elsewhere and outside the image). Items past the end are zero.
template <typename T>
__global__ void PackWindowsKernel(const T* __restrict__ src, TileGrid grid, int64_t offset_y,
                                  int64_t offset_x, int64_t window_h, int64_t window_w,
                                  int64_t item_begin, int64_t group, int64_t p, int64_t q,
                                  T* __restrict__ dst) {
  const int64_t tiles = grid.tiles_y * grid.tiles_x;
  const int64_t items = grid.batch * tiles;
  KSEG_FFT_GRID_LOOP(idx, group * grid.channels * p * q) {
    const int64_t v = idx % q;
    const int64_t u = (idx / q) % p;
    const int64_t c = (idx / (p * q)) % grid.channels;
    const int64_t item = item_begin + idx / (p * q * grid.channels);
    T value = T(0);
    if (item < items && u < window_h && v < window_w) {
      const int64_t b = item / tiles;
      const int64_t t = item % tiles;
      const int64_t y = (t / grid.tiles_x) * grid.tile_h + offset_y + u;
      const int64_t x = (t % grid.tiles_x) * grid.tile_w + offset_x + v;
      if (y >= 0 && y < grid.height && x >= 0 && x < grid.width)
        value = src[((b * grid.height + y) * grid.width + x) * grid.channels + c];
    }
    dst[idx] = value;
  }
}

// dst [n_in * n_out, p, q]: slice (a, o) of the kernel at [i, j] (zero elsewhere). The kernel is
// stored [kh, kw, n_in, n_out]; with `flip` it is stored [kh, kw, n_out, n_in] and read flipped in
// space (the input gradient's kernel).
template <typename T>
__global__ void PackKernelKernel(const T* __restrict__ kernel, int64_t kh, int64_t kw,
                                 int64_t n_in, int64_t n_out, bool flip, int64_t p, int64_t q,
                                 T* __restrict__ dst) {
  KSEG_FFT_GRID_LOOP(idx, n_in * n_out * p * q) {
    const int64_t j = idx % q;
    const int64_t i = (idx / q) % p;
    const int64_t slice = idx / (p * q);
    const int64_t a = slice / n_out;
    const int64_t o = slice % n_out;
    T value = T(0);
    if (i < kh && j < kw) {
      value = flip ? kernel[(((kh - 1 - i) * kw + (kw - 1 - j)) * n_out + o) * n_in + a]
                   : kernel[((i * kw + j) * n_in + a) * n_out + o];
    }
    dst[idx] = value;
  }
}

template <typename C>
__device__ inline C MulMaybeConj(C a, C b, bool conj_b) {
  const auto bi = conj_b ? -b.y : b.y;
  C r;
  r.x = a.x * b.x - a.y * bi;
  r.y = a.x * bi + a.y * b.x;
  return r;
}

// out[(m * n_count + n) * f_count + f] (+)= sum_k A[(m a_m + k a_k) F + f] * B'[(k b_k + n b_n) F + f]
// with B' = conj(B) when conj_b. Each thread owns one (m, f) and kTileN consecutive n, so each
// A element is read once per kTileN outputs.
template <typename C, int kTileN>
__global__ void ContractKernel(int64_t m_count, int64_t n_count, int64_t k_count, int64_t f_count,
                               const C* __restrict__ a, int64_t a_m, int64_t a_k,
                               const C* __restrict__ b, int64_t b_k, int64_t b_n, bool conj_b,
                               bool accumulate, C* __restrict__ out) {
  const int64_t n_tiles = (n_count + kTileN - 1) / kTileN;
  KSEG_FFT_GRID_LOOP(idx, m_count * n_tiles * f_count) {
    const int64_t f = idx % f_count;
    const int64_t nt = (idx / f_count) % n_tiles;
    const int64_t m = idx / (f_count * n_tiles);
    C acc[kTileN];
    for (int t = 0; t < kTileN; ++t) acc[t].x = acc[t].y = 0;
    for (int64_t k = 0; k < k_count; ++k) {
      const C av = a[(m * a_m + k * a_k) * f_count + f];
      for (int t = 0; t < kTileN; ++t) {
        const int64_t n = nt * kTileN + t;
        if (n >= n_count) break;
        const C bv = b[(k * b_k + n * b_n) * f_count + f];
        const C prod = MulMaybeConj(av, bv, conj_b);
        acc[t].x += prod.x;
        acc[t].y += prod.y;
      }
    }
    for (int t = 0; t < kTileN; ++t) {
      const int64_t n = nt * kTileN + t;
      if (n >= n_count) break;
      C* dst = out + (m * n_count + n) * f_count + f;
      if (accumulate) {
        acc[t].x += dst->x;
        acc[t].y += dst->y;
      }
      *dst = acc[t];
    }
  }
}

// dst NHWC (grid): element (y, x, c) of item (item_begin + g) is
// scale * src[((g * channels + c) * p + u + shift_y) * q + v + shift_x], u = y - tile origin.
template <typename T>
__global__ void UnpackTilesKernel(const T* __restrict__ src, TileGrid grid, int64_t shift_y,
                                  int64_t shift_x, int64_t item_begin, int64_t group, int64_t p,
                                  int64_t q, T scale, T* __restrict__ dst) {
  const int64_t tiles = grid.tiles_y * grid.tiles_x;
  const int64_t items = grid.batch * tiles;
  KSEG_FFT_GRID_LOOP(idx, group * grid.tile_h * grid.tile_w * grid.channels) {
    const int64_t c = idx % grid.channels;
    const int64_t v = (idx / grid.channels) % grid.tile_w;
    const int64_t u = (idx / (grid.channels * grid.tile_w)) % grid.tile_h;
    const int64_t g = idx / (grid.channels * grid.tile_w * grid.tile_h);
    const int64_t item = item_begin + g;
    if (item >= items) continue;
    const int64_t b = item / tiles;
    const int64_t t = item % tiles;
    const int64_t y = (t / grid.tiles_x) * grid.tile_h + u;
    const int64_t x = (t % grid.tiles_x) * grid.tile_w + v;
    if (y >= grid.height || x >= grid.width) continue;
    dst[((b * grid.height + y) * grid.width + x) * grid.channels + c] =
        scale * src[((g * grid.channels + c) * p + u + shift_y) * q + v + shift_x];
  }
}

__device__ inline bool IsFinite(float x) { return isfinite(x); }
__device__ inline bool IsFinite(double x) { return isfinite(x); }

template <typename T>
__global__ void FirstNonFiniteKernel(const T* __restrict__ data, int64_t size,
                                     unsigned long long* first) {
  KSEG_FFT_GRID_LOOP(i, size) {
    if (!IsFinite(data[i])) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

#undef KSEG_FFT_GRID_LOOP

// ---------------------------------------------------------------------------------------------
// Host side.

// Refuses NaN/Inf like the CPU kernel (an FFT would spread one over a whole tile).
template <typename T>
absl::Status CheckFiniteOnDevice(tensorflow::OpKernelContext* ctx, cudaStream_t stream,
                                 const char* name_a, const T* a, int64_t size_a,
                                 const char* name_b, const T* b, int64_t size_b) {
  tensorflow::Tensor holder;
  unsigned long long* first = nullptr;
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, 2, &holder, &first));
  const unsigned long long sizes[2] = {static_cast<unsigned long long>(size_a),
                                       static_cast<unsigned long long>(size_b)};
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(first, sizes, sizeof(sizes), cudaMemcpyHostToDevice, stream),
      "FFT convolution input check"));
  if (size_a > 0)
    FirstNonFiniteKernel<T><<<BlocksFor(size_a), kThreadsPerBlock, 0, stream>>>(a, size_a, first);
  if (size_b > 0)
    FirstNonFiniteKernel<T><<<BlocksFor(size_b), kThreadsPerBlock, 0, stream>>>(b, size_b,
                                                                                first + 1);
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution input check"));
  unsigned long long found[2] = {0, 0};
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(found, first, sizeof(found), cudaMemcpyDeviceToHost, stream),
      "FFT convolution input check"));
  KSEG_GPU_RETURN_IF_ERROR(
      CudaStatus(cudaStreamSynchronize(stream), "FFT convolution input check"));
  for (int which = 0; which < 2; ++which) {
    if (found[which] >= sizes[which]) continue;
    const T* data = which == 0 ? a : b;
    T value = T(0);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(&value, data + found[which], sizeof(T),
                                                        cudaMemcpyDeviceToHost, stream),
                                        "FFT convolution input check"));
    KSEG_GPU_RETURN_IF_ERROR(
        CudaStatus(cudaStreamSynchronize(stream), "FFT convolution input check"));
    return absl::InvalidArgumentError(
        absl::StrCat(which == 0 ? name_a : name_b, " holds a non-finite value (",
                     static_cast<double>(value), ") at flat index ", found[which],
                     "; the FFT convolution needs finite inputs"));
  }
  return absl::OkStatus();
}

// Bytes of spectra and real buffers per tile group item; groups are sized to stay near this.
constexpr int64_t kGroupBudgetBytes = int64_t{256} << 20;

// Output tiles of a forward-type correlation (geometry g, plan tp) of `src` (NHWC, g.cin
// channels) with a kernel packed by PackKernelKernel(flip), written to dst (NHWC, g.cout).
template <typename T>
absl::Status CorrelateGpu(tensorflow::OpKernelContext* ctx, cudaStream_t stream,
                          const fft::Geometry& g, const fft::TilePlan& tp, const T* src,
                          const T* kernel, bool flip, T* dst) {
  using C = typename Complex<T>::Type;
  const CufftApi& api = Cufft();
  if (!api.error.empty()) return absl::FailedPreconditionError(api.error);
  const int64_t p = tp.nh, q = tp.nw, f = p * (q / 2 + 1);
  const TileGrid in_grid{g.batch, g.in_h, g.in_w, g.cin, tp.tiles_y, tp.tiles_x, tp.tile_h,
                         tp.tile_w};
  const TileGrid out_grid{g.batch, g.out_h, g.out_w, g.cout, tp.tiles_y, tp.tiles_x, tp.tile_h,
                          tp.tile_w};
  const int64_t items = in_grid.items();
  const int64_t per_item =
      (g.cin + g.cout) * (f * static_cast<int64_t>(sizeof(C)) + p * q * static_cast<int64_t>(sizeof(T)));
  const int64_t group = std::max<int64_t>(1, std::min(items, kGroupBudgetBytes / per_item));

  tensorflow::Tensor k_real_h, k_spec_h, x_real_h, x_spec_h, y_spec_h, y_real_h, work_h;
  T *k_real, *x_real, *y_real;
  C *k_spec, *x_spec, *y_spec;
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, g.cin * g.cout * p * q, &k_real_h, &k_real));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, g.cin * g.cout * f, &k_spec_h, &k_spec));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cin * p * q, &x_real_h, &x_real));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cin * f, &x_spec_h, &x_spec));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cout * f, &y_spec_h, &y_spec));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cout * p * q, &y_real_h, &y_real));

  FftPlan kernel_plan, forward_plan, inverse_plan;
  size_t work[3] = {0, 0, 0};
  KSEG_GPU_RETURN_IF_ERROR(
      kernel_plan.Make(api, p, q, Complex<T>::kForward, g.cin * g.cout, &work[0]));
  KSEG_GPU_RETURN_IF_ERROR(
      forward_plan.Make(api, p, q, Complex<T>::kForward, group * g.cin, &work[1]));
  KSEG_GPU_RETURN_IF_ERROR(
      inverse_plan.Make(api, p, q, Complex<T>::kInverse, group * g.cout, &work[2]));
  const size_t work_bytes = std::max({work[0], work[1], work[2]});
  void* work_area = nullptr;
  KSEG_GPU_RETURN_IF_ERROR(
      gpu_glue::AllocateBytes(ctx, static_cast<int64_t>(work_bytes), &work_h, &work_area));
  KSEG_GPU_RETURN_IF_ERROR(kernel_plan.Bind(stream, work_area));
  KSEG_GPU_RETURN_IF_ERROR(forward_plan.Bind(stream, work_area));
  KSEG_GPU_RETURN_IF_ERROR(inverse_plan.Bind(stream, work_area));

  PackKernelKernel<T><<<BlocksFor(g.cin * g.cout * p * q), kThreadsPerBlock, 0, stream>>>(
      kernel, g.kh, g.kw, g.cin, g.cout, flip, p, q, k_real);
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution kernel packing"));
  KSEG_GPU_RETURN_IF_ERROR(
      CufftStatus(ExecForward(api, kernel_plan.handle(), k_real, k_spec), "kernel transform"));
  const T scale = T(1) / static_cast<T>(p * q);
  constexpr int kTileN = 4;
  const int64_t n_tiles = (g.cout + kTileN - 1) / kTileN;
  for (int64_t begin = 0; begin < items; begin += group) {
    PackWindowsKernel<T><<<BlocksFor(group * g.cin * p * q), kThreadsPerBlock, 0, stream>>>(
        src, in_grid, -g.pad_top, -g.pad_left, p, q, begin, group, p, q, x_real);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution input packing"));
    KSEG_GPU_RETURN_IF_ERROR(
        CufftStatus(ExecForward(api, forward_plan.handle(), x_real, x_spec), "input transform"));
    ContractKernel<C, kTileN><<<BlocksFor(group * n_tiles * f), kThreadsPerBlock, 0, stream>>>(
        group, g.cout, g.cin, f, x_spec, g.cin, 1, k_spec, g.cout, 1, /*conj_b=*/true,
        /*accumulate=*/false, y_spec);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution channel mixing"));
    KSEG_GPU_RETURN_IF_ERROR(CufftStatus(ExecInverse(api, inverse_plan.handle(), y_spec, y_real),
                                         "inverse transform"));
    UnpackTilesKernel<T><<<BlocksFor(group * tp.tile_h * tp.tile_w * g.cout), kThreadsPerBlock, 0,
                           stream>>>(y_real, out_grid, 0, 0, begin, group, p, q, scale, dst);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution output"));
  }
  // The plans are destroyed on return; make sure no transform still uses them.
  return CudaStatus(cudaStreamSynchronize(stream), "FFT convolution");
}

}  // namespace

namespace functor {

template <typename T>
absl::Status FftConv2D<Eigen::GpuDevice, T>::operator()(
    tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d, const T* input, const T* kernel,
    int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t kh, int64_t kw, int64_t cout,
    bool padding_same, T* output) {
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const std::string error = fft::ValidateGeometry(g);
  if (!error.empty()) return absl::InvalidArgumentError(error);
  if (batch == 0) return absl::OkStatus();
  KSEG_GPU_RETURN_IF_ERROR(CheckFiniteOnDevice(ctx, d.stream(), "input", input,
                                               batch * h * w * cin, "filter", kernel,
                                               kh * kw * cin * cout));
  const fft::TilePlan tp = fft::ChooseTilePlan(g, sizeof(T), 1);
  return CorrelateGpu<T>(ctx, d.stream(), g, tp, input, kernel, /*flip=*/false, output);
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
  const fft::Geometry t = fft::InputGradientGeometry(g);
  const fft::TilePlan tp = fft::ChooseTilePlan(t, sizeof(T), 1);
  return CorrelateGpu<T>(ctx, d.stream(), t, tp, grad_output, kernel, /*flip=*/true, grad_input);
}

template <typename T>
absl::Status FftConv2DBackpropFilter<Eigen::GpuDevice, T>::operator()(
    tensorflow::OpKernelContext* ctx, const Eigen::GpuDevice& d, const T* input,
    const T* grad_output, int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t kh, int64_t kw,
    int64_t cout, bool padding_same, T* grad_kernel) {
  using C = typename Complex<T>::Type;
  cudaStream_t stream = d.stream();
  const fft::Geometry g = fft::ConvGeometry(batch, h, w, cin, kh, kw, cout, padding_same);
  const std::string error = fft::ValidateGeometry(g);
  if (!error.empty()) return absl::InvalidArgumentError(error);
  if (batch == 0)
    return CudaStatus(cudaMemsetAsync(grad_kernel, 0, sizeof(T) * kh * kw * cin * cout, stream),
                      "FFT convolution kernel gradient");
  KSEG_GPU_RETURN_IF_ERROR(CheckFiniteOnDevice(ctx, stream, "input", input, batch * h * w * cin,
                                               "grad_output", grad_output,
                                               batch * g.out_h * g.out_w * cout));
  const CufftApi& api = Cufft();
  if (!api.error.empty()) return absl::FailedPreconditionError(api.error);
  const fft::TilePlan tp = fft::ChooseTilePlan(g, sizeof(T), 1);
  const int64_t p = tp.nh, q = tp.nw, f = p * (q / 2 + 1);
  // Input windows as in the forward pass; grad_output tiles occupy rows/columns < tile size.
  const TileGrid in_grid{g.batch, g.in_h, g.in_w, g.cin, tp.tiles_y, tp.tiles_x, tp.tile_h,
                         tp.tile_w};
  const TileGrid grad_grid{g.batch, g.out_h, g.out_w, g.cout, tp.tiles_y, tp.tiles_x, tp.tile_h,
                           tp.tile_w};
  const int64_t items = in_grid.items();
  const int64_t per_item =
      (g.cin + g.cout) * (f * static_cast<int64_t>(sizeof(C)) + p * q * static_cast<int64_t>(sizeof(T)));
  const int64_t group = std::max<int64_t>(1, std::min(items, kGroupBudgetBytes / per_item));

  tensorflow::Tensor x_real_h, x_spec_h, g_real_h, g_spec_h, k_spec_h, k_real_h, work_h;
  T *x_real, *g_real, *k_real;
  C *x_spec, *g_spec, *k_spec;
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cin * p * q, &x_real_h, &x_real));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cin * f, &x_spec_h, &x_spec));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cout * p * q, &g_real_h, &g_real));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, group * g.cout * f, &g_spec_h, &g_spec));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, g.cin * g.cout * f, &k_spec_h, &k_spec));
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, g.cin * g.cout * p * q, &k_real_h, &k_real));

  FftPlan input_plan, grad_plan, inverse_plan;
  size_t work[3] = {0, 0, 0};
  KSEG_GPU_RETURN_IF_ERROR(
      input_plan.Make(api, p, q, Complex<T>::kForward, group * g.cin, &work[0]));
  KSEG_GPU_RETURN_IF_ERROR(
      grad_plan.Make(api, p, q, Complex<T>::kForward, group * g.cout, &work[1]));
  KSEG_GPU_RETURN_IF_ERROR(
      inverse_plan.Make(api, p, q, Complex<T>::kInverse, g.cin * g.cout, &work[2]));
  const size_t work_bytes = std::max({work[0], work[1], work[2]});
  void* work_area = nullptr;
  KSEG_GPU_RETURN_IF_ERROR(
      gpu_glue::AllocateBytes(ctx, static_cast<int64_t>(work_bytes), &work_h, &work_area));
  KSEG_GPU_RETURN_IF_ERROR(input_plan.Bind(stream, work_area));
  KSEG_GPU_RETURN_IF_ERROR(grad_plan.Bind(stream, work_area));
  KSEG_GPU_RETURN_IF_ERROR(inverse_plan.Bind(stream, work_area));

  constexpr int kTileN = 4;
  const int64_t n_tiles = (g.cout + kTileN - 1) / kTileN;
  for (int64_t begin = 0; begin < items; begin += group) {
    PackWindowsKernel<T><<<BlocksFor(group * g.cin * p * q), kThreadsPerBlock, 0, stream>>>(
        input, in_grid, -g.pad_top, -g.pad_left, p, q, begin, group, p, q, x_real);
    PackWindowsKernel<T><<<BlocksFor(group * g.cout * p * q), kThreadsPerBlock, 0, stream>>>(
        grad_output, grad_grid, 0, 0, tp.tile_h, tp.tile_w, begin, group, p, q, g_real);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution packing"));
    KSEG_GPU_RETURN_IF_ERROR(
        CufftStatus(ExecForward(api, input_plan.handle(), x_real, x_spec), "input transform"));
    KSEG_GPU_RETURN_IF_ERROR(CufftStatus(ExecForward(api, grad_plan.handle(), g_real, g_spec),
                                         "gradient transform"));
    // K[c, o] (+)= sum over the group's items of X[item, c] * conj(G[item, o]).
    ContractKernel<C, kTileN><<<BlocksFor(g.cin * n_tiles * f), kThreadsPerBlock, 0, stream>>>(
        g.cin, g.cout, group, f, x_spec, 1, g.cin, g_spec, g.cout, 1, /*conj_b=*/true,
        /*accumulate=*/begin > 0, k_spec);
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution channel mixing"));
  }
  KSEG_GPU_RETURN_IF_ERROR(CufftStatus(ExecInverse(api, inverse_plan.handle(), k_spec, k_real),
                                       "inverse transform"));
  // k_real [(c * cout + o), p, q] -> grad_kernel [kh, kw, cin, cout]: one "image" of kh x kw.
  const TileGrid kernel_grid{1, kh, kw, cin * cout, 1, 1, kh, kw};
  UnpackTilesKernel<T><<<BlocksFor(kh * kw * cin * cout), kThreadsPerBlock, 0, stream>>>(
      k_real, kernel_grid, 0, 0, 0, 1, p, q, T(1) / static_cast<T>(p * q), grad_kernel);
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FFT convolution kernel gradient"));
  return CudaStatus(cudaStreamSynchronize(stream), "FFT convolution kernel gradient");
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
