// Keeps the scratch memory of the last call of a CPU kernel for the next one, TF-free: fresh
// multi-megabyte allocations cost a page fault per 4 KiB, which at 500x375 pixels is a sizeable
// part of a dense CRF call.
//
// All caches together hold at most CacheCapBytes(): kDefaultCacheBytes (256 MiB), or
// $KSEG_OPS_CACHE_BYTES (read after every call; 0 turns caching off). What counts is what a
// scratch really keeps allocated (its vectors' capacities, lattices and workspaces included);
// a scratch that does not fit beside the others is freed when its call ends.
// ReleaseCachedScratch() frees every cached scratch (kseg_ops.release_cached_memory()).
#ifndef KSEG_OPS_CC_LATTICE_SCRATCH_CACHE_H_
#define KSEG_OPS_CC_LATTICE_SCRATCH_CACHE_H_

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>
#if defined(__GLIBC__)  // defined by the C++ headers above
#include <malloc.h>
#endif

namespace kseg {

constexpr char kCacheBytesEnv[] = "KSEG_OPS_CACHE_BYTES";
constexpr int64_t kDefaultCacheBytes = int64_t{256} << 20;

// The cap on all cached scratch: $KSEG_OPS_CACHE_BYTES when it is an integer >= 0, else
// kDefaultCacheBytes.
inline int64_t CacheCapBytes() {
  const char* text = std::getenv(kCacheBytesEnv);
  if (text == nullptr || *text == '\0') return kDefaultCacheBytes;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < 0) return kDefaultCacheBytes;
  return static_cast<int64_t>(value);
}

namespace internal {

// One lock and one byte count for every cache, so that the cap holds across them.
struct CacheRegistry {
  std::mutex mu;
  int64_t held_bytes = 0;
  std::vector<std::function<int64_t()>> releasers;  // each frees one cache, returns the bytes
};

inline CacheRegistry& Registry() {
  static CacheRegistry* registry = new CacheRegistry;  // never destroyed: used at exit
  return *registry;
}

// glibc keeps freed heap memory (in every thread's arena) for the process: after freeing a
// large scratch, hand the whole free pages back to the system, or the process stays as large.
inline void ReturnFreedMemory(int64_t bytes) {
#if defined(__GLIBC__)
  if (bytes >= (int64_t{16} << 20)) malloc_trim(0);
#else
  (void)bytes;
#endif
}

}  // namespace internal

// Bytes held by all caches now.
inline int64_t CachedScratchBytes() {
  internal::CacheRegistry& r = internal::Registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.held_bytes;
}

// Frees every cached scratch; returns the bytes freed.
inline int64_t ReleaseCachedScratch() {
  std::vector<std::function<int64_t()>> releasers;
  {
    internal::CacheRegistry& r = internal::Registry();
    std::lock_guard<std::mutex> lock(r.mu);
    releasers = r.releasers;
  }
  int64_t freed = 0;
  for (const auto& release : releasers) freed += release();
  return freed;
}

// Holds at most one Scratch (default-constructible, with `int64_t CapacityBytes() const`).
// Take() hands out the cached one or a new one; Give() keeps it when nothing is cached here and
// it fits under the cap beside the other caches, else frees it. Concurrent calls each get their
// own Scratch. Instances must live for the whole process (function-local `new`).
template <typename Scratch>
class ScratchCache {
 public:
  ScratchCache() {
    internal::CacheRegistry& r = internal::Registry();
    std::lock_guard<std::mutex> lock(r.mu);
    r.releasers.push_back([this] { return Release(); });
  }

  std::unique_ptr<Scratch> Take() {
    {
      internal::CacheRegistry& r = internal::Registry();
      std::lock_guard<std::mutex> lock(r.mu);
      if (cached_) {
        r.held_bytes -= cached_bytes_;
        cached_bytes_ = 0;
        return std::move(cached_);
      }
    }
    return std::make_unique<Scratch>();
  }

  void Give(std::unique_ptr<Scratch> scratch) {
    const int64_t bytes = scratch->CapacityBytes();
    const int64_t cap = CacheCapBytes();
    {
      internal::CacheRegistry& r = internal::Registry();
      std::lock_guard<std::mutex> lock(r.mu);
      if (!cached_ && r.held_bytes + bytes <= cap) {
        cached_ = std::move(scratch);
        cached_bytes_ = bytes;
        r.held_bytes += bytes;
        return;
      }
    }
    scratch.reset();
    internal::ReturnFreedMemory(bytes);
  }

  // Frees the cached scratch; returns its bytes.
  int64_t Release() {
    std::unique_ptr<Scratch> drop;
    int64_t freed = 0;
    {
      internal::CacheRegistry& r = internal::Registry();
      std::lock_guard<std::mutex> lock(r.mu);
      drop = std::move(cached_);
      freed = cached_bytes_;
      r.held_bytes -= freed;
      cached_bytes_ = 0;
    }
    drop.reset();
    internal::ReturnFreedMemory(freed);
    return freed;
  }

 private:
  std::unique_ptr<Scratch> cached_;
  int64_t cached_bytes_ = 0;
};

}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_SCRATCH_CACHE_H_
