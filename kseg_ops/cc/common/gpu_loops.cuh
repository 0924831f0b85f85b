// The grid-stride loop of every CUDA kernel in kseg_ops (and of their host emulation,
// kseg_ops/cc/testing/cuda_host_emulation.h), and the launch shape it expects.
#ifndef KSEG_OPS_CC_COMMON_GPU_LOOPS_CUH_
#define KSEG_OPS_CC_COMMON_GPU_LOOPS_CUH_

#include <cstdint>

// for (int64_t i = this thread's first item; i < total; i += all threads of the grid)
#define KSEG_GRID_LOOP(i, total)                                                             \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

namespace kseg {
namespace gpu {

constexpr int kThreadsPerBlock = 256;

// Blocks for a grid-stride loop over `total` items (kernels loop, so the cap is only a limit).
inline unsigned int BlocksFor(int64_t total) {
  const int64_t blocks = (total + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > (1 << 20) ? (1 << 20) : blocks));
}

}  // namespace gpu
}  // namespace kseg

#endif  // KSEG_OPS_CC_COMMON_GPU_LOOPS_CUH_
