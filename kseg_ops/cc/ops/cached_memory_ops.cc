// Registration of the ops that report and free the scratch memory kept between calls
// (lattice/scratch_cache.h).
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"

namespace kseg {

REGISTER_OP("Kseg>CachedMemoryBytes")
    .Output("bytes: int64")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::ScalarShape)
    .Doc(R"doc(
Bytes of host memory the kseg_ops kernels keep between calls (the dense CRF's scratch), at most
$KSEG_OPS_CACHE_BYTES or 256 MiB.
)doc");

REGISTER_OP("Kseg>ReleaseCachedMemory")
    .Output("freed_bytes: int64")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::ScalarShape)
    .Doc(R"doc(
Frees the host memory the kseg_ops kernels keep between calls; returns the bytes freed.
)doc");

}  // namespace kseg
