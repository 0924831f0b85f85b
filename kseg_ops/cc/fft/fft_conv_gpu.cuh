// CUDA side of the FFT correlation (see fft_conv_core.h for the math and the tiling), free of
// TensorFlow and of any FFT library: the caller passes the memory and an object that runs the
// batched 2-D real FFTs (cuFFT in fft_conv_op_gpu.cu.cc, a plain DFT in the host-emulated test).
//
// Forward-type correlation (the forward op, and the input gradient with a flipped kernel):
//   kernel slices --PackKernel--> real [cin * cout, P, Q] --fft.KernelForward--> K
//   per group of tiles:
//     input windows --PackWindows--> real [group * cin, P, Q] --fft.InputForward--> X
//     Y[item, o] = sum_c X[item, c] * conj(K[c, o])              (Contract, per frequency)
//     Y --fft.OutputInverse--> real [group * cout, P, Q] --UnpackTiles (x 1/PQ)--> output
// Kernel gradient: K[c, o] = sum over all tiles of X[item, c] * conj(G[item, o]), G the spectra of
// the output-gradient tiles; K --fft.KernelInverse--> [cin * cout, P, Q] --> [kh, kw, cin, cout].
// Tile `item` = (b * tiles_y + ty) * tiles_x + tx; its input window starts at
// (ty * tile_h - pad_top, tx * tile_w - pad_left) and is P x Q (P = tile_h + kh - 1), so the
// circular correlation never wraps into the outputs kept.
#ifndef KSEG_OPS_CC_FFT_FFT_CONV_GPU_CUH_
#define KSEG_OPS_CC_FFT_FFT_CONV_GPU_CUH_

#include <algorithm>
#include <cstdint>
#include <string>

#include "kseg_ops/cc/fft/fft_conv_core.h"
#include "kseg_ops/cc/lattice/permutohedral_gpu.cuh"  // KSEG_LAUNCH, BlocksFor, Carver

namespace kseg {
namespace fft {
namespace gpu {

using lattice::gpu::BlocksFor;
using lattice::gpu::Carver;
using lattice::gpu::kThreadsPerBlock;

template <typename T>
struct ComplexOf;
template <>
struct ComplexOf<float> {
  using Type = float2;
};
template <>
struct ComplexOf<double> {
  using Type = double2;
};

// An NHWC tensor cut into tiles of tile_h x tile_w (the output tiling of the plan).
struct TileGrid {
  int64_t batch, height, width, channels;
  int64_t tiles_y, tiles_x, tile_h, tile_w;
  int64_t items() const { return batch * tiles_y * tiles_x; }
};

// dst [group * channels, p, q]: the window of item (item_begin + g): rows
// ty * tile_h + offset_y + u for u < window_h, columns likewise; zero outside the tensor, beyond
// the window and for items past the end.
template <typename T>
__global__ void PackWindowsKernel(const T* __restrict__ src, TileGrid grid, int64_t offset_y,
                                  int64_t offset_x, int64_t window_h, int64_t window_w,
                                  int64_t item_begin, int64_t group, int64_t p, int64_t q,
                                  T* __restrict__ dst) {
  const int64_t tiles = grid.tiles_y * grid.tiles_x;
  const int64_t items = grid.batch * tiles;
  KSEG_GRID_LOOP(idx, group * grid.channels * p * q) {
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

// dst [n_in * n_out, p, q]: slice (a, o) holds kernel tap [i, j] at (i, j), zero elsewhere. The
// kernel is stored [kh, kw, n_in, n_out]; with `flip` it is stored [kh, kw, n_out, n_in] and read
// flipped in space (the kernel of the input gradient).
template <typename T>
__global__ void PackKernelKernel(const T* __restrict__ kernel, int64_t kh, int64_t kw, int64_t n_in,
                                 int64_t n_out, bool flip, int64_t p, int64_t q,
                                 T* __restrict__ dst) {
  KSEG_GRID_LOOP(idx, n_in * n_out * p * q) {
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

// out[(m * n_count + n) F + f] (+)= sum_k A[(m a_m + k a_k) F + f] * conj(B[(k b_k + n b_n) F +
// f]). One thread per (m, f) and kTileN consecutive n: each A element is read once per kTileN
// outputs.
template <typename C, int kTileN>
__global__ void ContractKernel(int64_t m_count, int64_t n_count, int64_t k_count, int64_t f_count,
                               const C* __restrict__ a, int64_t a_m, int64_t a_k,
                               const C* __restrict__ b, int64_t b_k, int64_t b_n, bool accumulate,
                               C* __restrict__ out) {
  const int64_t n_tiles = (n_count + kTileN - 1) / kTileN;
  KSEG_GRID_LOOP(idx, m_count * n_tiles * f_count) {
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
        // av * conj(bv)
        acc[t].x += av.x * bv.x + av.y * bv.y;
        acc[t].y += av.y * bv.x - av.x * bv.y;
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

// dst (NHWC, grid): element (y, x, c) of item (item_begin + g) is
// scale * src[((g * channels + c) * p + u) * q + v], (u, v) its place in the tile.
template <typename T>
__global__ void UnpackTilesKernel(const T* __restrict__ src, TileGrid grid, int64_t item_begin,
                                  int64_t group, int64_t p, int64_t q, T scale,
                                  T* __restrict__ dst) {
  const int64_t tiles = grid.tiles_y * grid.tiles_x;
  const int64_t items = grid.batch * tiles;
  KSEG_GRID_LOOP(idx, group * grid.tile_h * grid.tile_w * grid.channels) {
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
        scale * src[((g * grid.channels + c) * p + u) * q + v];
  }
}

constexpr int kContractTile = 4;

// Sizes of one GPU correlation: FFT size, tiles, and how many tiles are transformed together
// (bounded so that one group's buffers stay near group_budget_bytes).
struct GpuPlan {
  int64_t p = 1, q = 1, f = 1;  // FFT size and number of frequencies p * (q / 2 + 1)
  TileGrid in_grid{}, out_grid{};
  int64_t items = 0, group = 1;
};

template <typename T>
GpuPlan MakeGpuPlan(const Geometry& g, const TilePlan& tp,
                    int64_t group_budget_bytes = int64_t{256} << 20) {
  GpuPlan plan;
  plan.p = tp.nh;
  plan.q = tp.nw;
  plan.f = plan.p * (plan.q / 2 + 1);
  plan.in_grid =
      TileGrid{g.batch, g.in_h, g.in_w, g.cin, tp.tiles_y, tp.tiles_x, tp.tile_h, tp.tile_w};
  plan.out_grid =
      TileGrid{g.batch, g.out_h, g.out_w, g.cout, tp.tiles_y, tp.tiles_x, tp.tile_h, tp.tile_w};
  plan.items = plan.in_grid.items();
  const int64_t per_item =
      (g.cin + g.cout) * (plan.f * 2 + plan.p * plan.q) * static_cast<int64_t>(sizeof(T));
  plan.group = std::max<int64_t>(
      1, std::min<int64_t>(plan.items, group_budget_bytes / std::max<int64_t>(per_item, 1)));
  return plan;
}

// Device buffers of one correlation (forward type or kernel gradient).
template <typename T>
struct Buffers {
  using C = typename ComplexOf<T>::Type;
  T* kernel_real = nullptr;  // [cin * cout, p, q]
  C* kernel_spec = nullptr;  // [cin * cout, f]
  T* in_real = nullptr;      // [group * cin, p, q]
  C* in_spec = nullptr;      // [group * cin, f]
  T* out_real = nullptr;     // [group * cout, p, q]
  C* out_spec = nullptr;     // [group * cout, f]
};

// Bytes needed (base == nullptr) or pointers carved out of `base`.
template <typename T>
int64_t CarveBuffers(void* base, const Geometry& g, const GpuPlan& plan, Buffers<T>* buf) {
  using C = typename ComplexOf<T>::Type;
  Carver c(base);
  buf->kernel_real = c.Take<T>(g.cin * g.cout * plan.p * plan.q);
  buf->kernel_spec = c.Take<C>(g.cin * g.cout * plan.f);
  buf->in_real = c.Take<T>(plan.group * g.cin * plan.p * plan.q);
  buf->in_spec = c.Take<C>(plan.group * g.cin * plan.f);
  buf->out_real = c.Take<T>(plan.group * g.cout * plan.p * plan.q);
  buf->out_spec = c.Take<C>(plan.group * g.cout * plan.f);
  return c.used();
}

// The transforms a correlation needs, all batched 2-D p x q real FFTs (unnormalised):
//   std::string KernelForward(T* real, C* spec)   batch cin * cout
//   std::string KernelInverse(C* spec, T* real)   batch cin * cout (kernel gradient only)
//   std::string InputForward(T* real, C* spec)    batch group * cin
//   std::string OutputForward(T* real, C* spec)   batch group * cout (kernel gradient only)
//   std::string OutputInverse(C* spec, T* real)   batch group * cout (forward type only)
// Each returns an empty string on success. Inverse transforms may overwrite their input.

inline std::string LaunchError(cudaError_t err, const char* what) {
  return err == cudaSuccess ? std::string() : std::string("CUDA launch failed in ") + what;
}

// Forward-type correlation of src (NHWC, g.cin channels) into dst (NHWC, g.cout channels).
template <typename T, typename Transforms>
std::string RunCorrelation(cudaStream_t stream, const Geometry& g, const GpuPlan& plan,
                           const T* src, const T* kernel, bool flip, T* dst, const Buffers<T>& buf,
                           Transforms& fft) {
  using C = typename ComplexOf<T>::Type;
  const int64_t p = plan.p, q = plan.q;
  KSEG_LAUNCH(PackKernelKernel<T>, BlocksFor(g.cin * g.cout * p * q), kThreadsPerBlock, stream,
              kernel, g.kh, g.kw, g.cin, g.cout, flip, p, q, buf.kernel_real);
  std::string error = LaunchError(cudaGetLastError(), "kernel packing");
  if (error.empty()) error = fft.KernelForward(buf.kernel_real, buf.kernel_spec);
  const T scale = T(1) / static_cast<T>(p * q);
  const int64_t n_tiles = (g.cout + kContractTile - 1) / kContractTile;
  auto* contract = &ContractKernel<C, kContractTile>;  // a name without a comma, for the macro
  for (int64_t begin = 0; error.empty() && begin < plan.items; begin += plan.group) {
    KSEG_LAUNCH(PackWindowsKernel<T>, BlocksFor(plan.group * g.cin * p * q), kThreadsPerBlock,
                stream, src, plan.in_grid, -g.pad_top, -g.pad_left, p, q, begin, plan.group, p, q,
                buf.in_real);
    error = LaunchError(cudaGetLastError(), "input packing");
    if (error.empty()) error = fft.InputForward(buf.in_real, buf.in_spec);
    if (!error.empty()) break;
    KSEG_LAUNCH(contract, BlocksFor(plan.group * n_tiles * plan.f), kThreadsPerBlock, stream,
                plan.group, g.cout, g.cin, plan.f, static_cast<const C*>(buf.in_spec), g.cin,
                int64_t{1}, static_cast<const C*>(buf.kernel_spec), g.cout, int64_t{1}, false,
                buf.out_spec);
    error = LaunchError(cudaGetLastError(), "channel mixing");
    if (error.empty()) error = fft.OutputInverse(buf.out_spec, buf.out_real);
    if (!error.empty()) break;
    KSEG_LAUNCH(UnpackTilesKernel<T>,
                BlocksFor(plan.group * plan.out_grid.tile_h * plan.out_grid.tile_w * g.cout),
                kThreadsPerBlock, stream, static_cast<const T*>(buf.out_real), plan.out_grid, begin,
                plan.group, p, q, scale, dst);
    error = LaunchError(cudaGetLastError(), "output unpacking");
  }
  return error;
}

// Kernel gradient [kh, kw, cin, cout] of the forward correlation (geometry g) from its input
// and the gradient of its output.
template <typename T, typename Transforms>
std::string RunKernelGradient(cudaStream_t stream, const Geometry& g, const GpuPlan& plan,
                              const T* input, const T* grad_output, T* grad_kernel,
                              const Buffers<T>& buf, Transforms& fft) {
  using C = typename ComplexOf<T>::Type;
  const int64_t p = plan.p, q = plan.q;
  const int64_t n_tiles = (g.cout + kContractTile - 1) / kContractTile;
  auto* contract = &ContractKernel<C, kContractTile>;  // a name without a comma, for the macro
  std::string error;
  for (int64_t begin = 0; error.empty() && begin < plan.items; begin += plan.group) {
    KSEG_LAUNCH(PackWindowsKernel<T>, BlocksFor(plan.group * g.cin * p * q), kThreadsPerBlock,
                stream, input, plan.in_grid, -g.pad_top, -g.pad_left, p, q, begin, plan.group, p, q,
                buf.in_real);
    // Output-gradient tiles sit at the origin of their p x q frame.
    KSEG_LAUNCH(PackWindowsKernel<T>, BlocksFor(plan.group * g.cout * p * q), kThreadsPerBlock,
                stream, grad_output, plan.out_grid, int64_t{0}, int64_t{0}, plan.out_grid.tile_h,
                plan.out_grid.tile_w, begin, plan.group, p, q, buf.out_real);
    error = LaunchError(cudaGetLastError(), "packing");
    if (error.empty()) error = fft.InputForward(buf.in_real, buf.in_spec);
    if (error.empty()) error = fft.OutputForward(buf.out_real, buf.out_spec);
    if (!error.empty()) break;
    // K[c, o] (+)= sum over this group's items of X[item, c] * conj(G[item, o]).
    KSEG_LAUNCH(contract, BlocksFor(g.cin * n_tiles * plan.f), kThreadsPerBlock, stream, g.cin,
                g.cout, plan.group, plan.f, static_cast<const C*>(buf.in_spec), int64_t{1}, g.cin,
                static_cast<const C*>(buf.out_spec), g.cout, int64_t{1}, begin > 0,
                buf.kernel_spec);
    error = LaunchError(cudaGetLastError(), "channel mixing");
  }
  if (error.empty()) error = fft.KernelInverse(buf.kernel_spec, buf.kernel_real);
  if (!error.empty()) return error;
  // [(c * cout + o), p, q] -> [kh, kw, cin, cout]: one kh x kw "image" with cin * cout channels.
  const TileGrid kernel_grid{1, g.kh, g.kw, g.cin * g.cout, 1, 1, g.kh, g.kw};
  KSEG_LAUNCH(UnpackTilesKernel<T>, BlocksFor(g.kh * g.kw * g.cin * g.cout), kThreadsPerBlock,
              stream, static_cast<const T*>(buf.kernel_real), kernel_grid, int64_t{0}, int64_t{1},
              p, q, T(1) / static_cast<T>(p * q), grad_kernel);
  return LaunchError(cudaGetLastError(), "kernel gradient unpacking");
}

}  // namespace gpu
}  // namespace fft
}  // namespace kseg

#endif  // KSEG_OPS_CC_FFT_FFT_CONV_GPU_CUH_
