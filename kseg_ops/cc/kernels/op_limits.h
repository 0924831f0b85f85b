// TF glue of common/run_control.h: the limits of one op call (the host memory budget, the op
// context's cancellation) and the status a core's error becomes.
#ifndef KSEG_OPS_CC_KERNELS_OP_LIMITS_H_
#define KSEG_OPS_CC_KERNELS_OP_LIMITS_H_

#include <new>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kseg_ops/cc/common/run_control.h"
#include "tensorflow/core/framework/cancellation.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace kseg {

// The budget read from the environment now; cancelled when the op context's step is.
inline RunControl MakeRunControl(tensorflow::OpKernelContext* ctx) {
  RunControl control;
  control.budget_bytes = MemoryBudgetBytes();
  tensorflow::CancellationManager* manager = ctx->cancellation_manager();
  if (manager != nullptr) control.is_cancelled = [manager] { return manager->IsCancelled(); };
  return control;
}

// A core's error string as a status: ResourceExhausted over budget, Cancelled when cancelled,
// else InvalidArgument (the input is unusable).
inline absl::Status CoreStatus(const RunControl& control, const std::string& error) {
  if (error.empty()) return absl::OkStatus();
  switch (control.failure) {
    case RunFailure::kOverBudget:
      return absl::ResourceExhaustedError(error);
    case RunFailure::kCancelled:
      return absl::CancelledError(error);
    default:
      return absl::InvalidArgumentError(error);
  }
}

// Runs `call` (returning absl::Status); an allocation that fails anyway (std::bad_alloc, e.g.
// memory the budget does not count) becomes ResourceExhausted naming `sizes`, not an abort.
template <typename Call>
absl::Status CatchBadAlloc(const std::string& what, const std::string& sizes, Call&& call) {
  try {
    return call();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " ran out of host memory. Received: ", sizes));
  }
}

}  // namespace kseg

#endif  // KSEG_OPS_CC_KERNELS_OP_LIMITS_H_
