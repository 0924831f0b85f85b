// Limits of one op call, TF-free: a byte budget for the host buffers a core allocates and a
// cancellation check the cores poll between iterations and tiles. The op glue fills a
// RunControl from the environment and the op context; the cores set `failure` when they stop
// for one of these reasons, so the glue returns ResourceExhausted or Cancelled, not
// InvalidArgument.
#ifndef KSEG_OPS_CC_COMMON_RUN_CONTROL_H_
#define KSEG_OPS_CC_COMMON_RUN_CONTROL_H_

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>

namespace kseg {

// Overrides the host memory budget of one op call, in bytes (read on every call).
constexpr char kMemoryBudgetEnv[] = "KSEG_OPS_MEMORY_BUDGET_BYTES";
// Without it, a call may plan host buffers up to this fraction of the physical memory.
constexpr double kDefaultBudgetFraction = 0.5;

// Physical memory in bytes, or -1 when the system does not say.
inline int64_t PhysicalMemoryBytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<int64_t>(pages) * page;
#endif
  return -1;
}

// A positive integer from the environment variable `name`, or -1 when unset or unusable.
inline int64_t PositiveFromEnv(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return -1;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || value <= 0) return -1;
  return static_cast<int64_t>(value);
}

// The budget of one call: $KSEG_OPS_MEMORY_BUDGET_BYTES, else kDefaultBudgetFraction of the
// physical memory, else unlimited (-1).
inline int64_t MemoryBudgetBytes() {
  const int64_t from_env = PositiveFromEnv(kMemoryBudgetEnv);
  if (from_env > 0) return from_env;
  const int64_t physical = PhysicalMemoryBytes();
  return physical > 0 ? static_cast<int64_t>(kDefaultBudgetFraction * physical) : -1;
}

enum class RunFailure { kNone, kOverBudget, kCancelled };

struct RunControl {
  int64_t budget_bytes = -1;           // < 0: no budget
  std::function<bool()> is_cancelled;  // empty: never cancelled
  RunFailure failure = RunFailure::kNone;

  bool Cancelled() const { return is_cancelled && is_cancelled(); }
};

// What a core returns when the call was cancelled (with control->failure = kCancelled).
inline std::string CancelledError(RunControl* control, const std::string& what) {
  if (control != nullptr) control->failure = RunFailure::kCancelled;
  return what + " was cancelled";
}

// Empty when `bytes` fit the budget; otherwise the error (and control->failure = kOverBudget).
// `sizes` names the inputs that decide the bytes, `formula` how they are counted.
inline std::string CheckBudget(RunControl* control, int64_t bytes, const std::string& what,
                               const std::string& sizes) {
  if (control == nullptr || control->budget_bytes < 0 || bytes <= control->budget_bytes)
    return std::string();
  control->failure = RunFailure::kOverBudget;
  return what + " needs " + std::to_string(bytes) +
         " bytes of host memory, more than the budget of " + std::to_string(control->budget_bytes) +
         " bytes (set " + kMemoryBudgetEnv +
         " to change it; the default is half the physical memory). Received: " + sizes;
}

}  // namespace kseg

#endif  // KSEG_OPS_CC_COMMON_RUN_CONTROL_H_
