// CPU kernels of Kseg>CachedMemoryBytes and Kseg>ReleaseCachedMemory: report and free the
// scratch the kernels keep between calls (lattice/scratch_cache.h).
#include "kseg_ops/cc/lattice/scratch_cache.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace kseg {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

template <bool kRelease>
class CachedMemoryOp : public OpKernel {
 public:
  explicit CachedMemoryOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &output));
    output->scalar<int64_t>()() = kRelease ? ReleaseCachedScratch() : CachedScratchBytes();
  }
};

REGISTER_KERNEL_BUILDER(Name("Kseg>CachedMemoryBytes").Device(::tensorflow::DEVICE_CPU),
                        CachedMemoryOp<false>);
REGISTER_KERNEL_BUILDER(Name("Kseg>ReleaseCachedMemory").Device(::tensorflow::DEVICE_CPU),
                        CachedMemoryOp<true>);

}  // namespace kseg
