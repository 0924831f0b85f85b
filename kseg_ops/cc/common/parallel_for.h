// The one way kseg_ops code spreads work over threads, TF-free: the op glue adapts TensorFlow's
// thread pool to it (kernels/cpu_parallel.h), tests pass SerialFor().
#ifndef KSEG_OPS_CC_COMMON_PARALLEL_FOR_H_
#define KSEG_OPS_CC_COMMON_PARALLEL_FOR_H_

#include <cstdint>
#include <functional>

namespace kseg {

// parallel_for(total, cost_per_item, fn): runs fn(begin, end) over disjoint sub-ranges covering
// [0, total), possibly in parallel; cost_per_item is a rough count of cycles per item (for
// sharding). Callers must not depend on how the range is cut.
using ParallelFor =
    std::function<void(int64_t, double, const std::function<void(int64_t, int64_t)>&)>;

// A ParallelFor that runs everything on the calling thread.
inline ParallelFor SerialFor() {
  return [](int64_t total, double, const std::function<void(int64_t, int64_t)>& fn) {
    if (total > 0) fn(0, total);
  };
}

}  // namespace kseg

#endif  // KSEG_OPS_CC_COMMON_PARALLEL_FOR_H_
