# The one list of kseg_ops sources (paths relative to the repository root).
# Read by setup.py with exec() and load()ed by the Bazel BUILD files: keep it plain assignments.

# C++ compiled into _kseg_ops.so by g++ (kernels, op registrations).
OPS_CPU_SRCS = [
    "kseg_ops/cc/kernels/lattice_filter_op.cc",
    "kseg_ops/cc/kernels/dense_crf_op.cc",
    "kseg_ops/cc/kernels/fft_conv_op.cc",
    "kseg_ops/cc/kernels/cached_memory_op.cc",
    "kseg_ops/cc/ops/lattice_filter_ops.cc",
    "kseg_ops/cc/ops/dense_crf_ops.cc",
    "kseg_ops/cc/ops/fft_conv_ops.cc",
    "kseg_ops/cc/ops/cached_memory_ops.cc",
]

# Headers the CPU sources include.
OPS_HDRS = [
    "kseg_ops/cc/common/cpu_features.h",
    "kseg_ops/cc/common/non_finite.h",
    "kseg_ops/cc/common/parallel_for.h",
    "kseg_ops/cc/common/run_control.h",
    "kseg_ops/cc/lattice/permutohedral.h",
    "kseg_ops/cc/lattice/dense_crf.h",
    "kseg_ops/cc/lattice/dense_crf_params.h",
    "kseg_ops/cc/lattice/scratch_cache.h",
    "kseg_ops/cc/lattice/simd.h",
    "kseg_ops/cc/kernels/lattice_filter_op.h",
    "kseg_ops/cc/kernels/dense_crf_op.h",
    "kseg_ops/cc/kernels/cpu_parallel.h",
    "kseg_ops/cc/kernels/op_limits.h",
    "kseg_ops/cc/kernels/fft_conv_op.h",
    "kseg_ops/cc/fft/fft_conv_core.h",
    "kseg_ops/cc/fft/fft_conv_impl.inc",
]

# CUDA kernels compiled by nvcc with -DGOOGLE_CUDA=1 when building for GPU.
OPS_GPU_SRCS = [
    "kseg_ops/cc/kernels/lattice_filter_op_gpu.cu.cc",
    "kseg_ops/cc/kernels/dense_crf_op_gpu.cu.cc",
    "kseg_ops/cc/kernels/fft_conv_op_gpu.cu.cc",
]

# Headers only the CUDA sources include.
OPS_GPU_HDRS = [
    "kseg_ops/cc/common/gpu_loops.cuh",
    "kseg_ops/cc/lattice/permutohedral_gpu.cuh",
    "kseg_ops/cc/kernels/lattice_gpu_glue.cu.h",
    "kseg_ops/cc/lattice/dense_crf_gpu.cuh",
    "kseg_ops/cc/fft/fft_conv_gpu.cuh",
    "kseg_ops/cc/testing/cuda_host_emulation.h",
]
