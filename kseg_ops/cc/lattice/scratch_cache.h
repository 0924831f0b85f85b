// Keeps the scratch memory of the last call of a CPU kernel for the next one, TF-free: fresh
// multi-megabyte allocations cost a page fault per 4 KiB, which at 500x375 pixels is a sizeable
// part of a dense CRF call.
#ifndef KSEG_OPS_CC_LATTICE_SCRATCH_CACHE_H_
#define KSEG_OPS_CC_LATTICE_SCRATCH_CACHE_H_

#include <cstdint>
#include <memory>
#include <mutex>

namespace kseg {

// Holds at most one Scratch (default-constructible). Take() hands out the cached one or a new
// one; Give() keeps it unless another is already cached or it holds more than max_bytes.
// Concurrent calls each get their own Scratch.
template <typename Scratch>
class ScratchCache {
 public:
  explicit ScratchCache(int64_t max_bytes) : max_bytes_(max_bytes) {}

  std::unique_ptr<Scratch> Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_) return std::move(cached_);
    }
    return std::make_unique<Scratch>();
  }

  void Give(std::unique_ptr<Scratch> scratch, int64_t bytes) {
    if (bytes > max_bytes_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!cached_) cached_ = std::move(scratch);
  }

 private:
  const int64_t max_bytes_;
  std::mutex mu_;
  std::unique_ptr<Scratch> cached_;
};

}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_SCRATCH_CACHE_H_
