// Adapts Eigen's thread-pool device (TF's intra-op worker threads) to kseg::ParallelFor.
#ifndef KSEG_OPS_CC_KERNELS_CPU_PARALLEL_H_
#define KSEG_OPS_CC_KERNELS_CPU_PARALLEL_H_

#define EIGEN_USE_THREADS
#include <algorithm>

#include "kseg_ops/cc/common/parallel_for.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kseg {

inline ParallelFor MakeParallelFor(const Eigen::ThreadPoolDevice& d) {
  return
      [&d](int64_t total, double cost_per_item, const std::function<void(int64_t, int64_t)>& fn) {
        if (total <= 0) return;
        d.parallelFor(static_cast<Eigen::Index>(total),
                      Eigen::TensorOpCost(0, 0, std::max(cost_per_item, 1.0)),
                      [&fn](Eigen::Index begin, Eigen::Index end) { fn(begin, end); });
      };
}

}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_CPU_PARALLEL_H_
