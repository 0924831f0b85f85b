// Adapts Eigen's thread-pool device (TF's intra-op worker threads) to kseg::ParallelFor.
#ifndef KSEG_OPS_CC_KERNELS_CPU_PARALLEL_H_
#define KSEG_OPS_CC_KERNELS_CPU_PARALLEL_H_

#define EIGEN_USE_THREADS
#include <algorithm>
#include <atomic>
#include <new>

#include "kseg_ops/cc/common/parallel_for.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kseg {

// A std::bad_alloc thrown in a shard would end the process on a pool thread: it is caught
// there and thrown again on the calling thread once every shard is done, where the op's
// CatchBadAlloc turns it into ResourceExhausted.
inline ParallelFor MakeParallelFor(const Eigen::ThreadPoolDevice& d) {
  return
      [&d](int64_t total, double cost_per_item, const std::function<void(int64_t, int64_t)>& fn) {
        if (total <= 0) return;
        std::atomic<bool> out_of_memory{false};
        d.parallelFor(static_cast<Eigen::Index>(total),
                      Eigen::TensorOpCost(0, 0, std::max(cost_per_item, 1.0)),
                      [&fn, &out_of_memory](Eigen::Index begin, Eigen::Index end) {
                        if (out_of_memory.load(std::memory_order_relaxed)) return;
                        try {
                          fn(begin, end);
                        } catch (const std::bad_alloc&) {
                          out_of_memory.store(true);
                        }
                      });
        if (out_of_memory.load()) throw std::bad_alloc();
      };
}

}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_CPU_PARALLEL_H_
