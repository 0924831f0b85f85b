// Just enough of CUDA to run simple grid-stride kernels on the host, sequentially, so that the
// device algorithms (index arithmetic, hashing, scans, gathers) can be tested against the CPU
// code on machines without a GPU. Only for code that never relies on threads running
// concurrently (no barriers between threads of a block, no spinning on other threads).
//   KSEG_LAUNCH(kernel, blocks, threads, stream, args...) runs every (block, thread) in order.
// Compile with -ffp-contract=off so that host arithmetic matches the CPU code exactly.
#ifndef KSEG_OPS_CC_TESTING_CUDA_HOST_EMULATION_H_
#define KSEG_OPS_CC_TESTING_CUDA_HOST_EMULATION_H_

#if defined(__CUDACC__)
#error "cuda_host_emulation.h is for host compilers only"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __shared__ static

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 blockIdx(0), threadIdx(0), blockDim(1), gridDim(1);

inline void __syncthreads() {}

struct float2 {
  float x, y;
};
struct double2 {
  double x, y;
};

using cudaStream_t = void*;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3
};

inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

// Correctly rounded operations (the host never fuses them with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }

template <typename T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}

template <typename Kernel, typename... Args>
void KsegEmulateLaunch(Kernel kernel, dim3 blocks, dim3 threads, Args... args) {
  gridDim = blocks;
  blockDim = threads;
  for (unsigned int b = 0; b < blocks.x; ++b) {
    for (unsigned int t = 0; t < threads.x; ++t) {
      blockIdx = dim3(b);
      threadIdx = dim3(t);
      kernel(args...);
    }
  }
}

#define KSEG_LAUNCH(kernel, blocks, threads, stream, ...) \
  KsegEmulateLaunch(kernel, dim3(blocks), dim3(threads), __VA_ARGS__)

#endif  // KSEG_OPS_CC_TESTING_CUDA_HOST_EMULATION_H_
