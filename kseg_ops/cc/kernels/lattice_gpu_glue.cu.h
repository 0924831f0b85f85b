// TensorFlow glue shared by the GPU lattice filter and dense CRF kernels: temporary memory from
// the op's allocator, CUDA errors as absl statuses, and a lattice built in two phases around the
// one host read of its vertex count.
#ifndef KSEG_OPS_CC_KERNELS_LATTICE_GPU_GLUE_CU_H_
#define KSEG_OPS_CC_KERNELS_LATTICE_GPU_GLUE_CU_H_

#if GOOGLE_CUDA

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kseg_ops/cc/common/non_finite.h"
#include "kseg_ops/cc/lattice/permutohedral_gpu.cuh"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

// Returns the status of `expr` from the enclosing function unless it is OK.
#define KSEG_GPU_RETURN_IF_ERROR(expr)           \
  do {                                           \
    const absl::Status kseg_status_ = (expr);    \
    if (!kseg_status_.ok()) return kseg_status_; \
  } while (false)

namespace kseg {
namespace gpu_glue {

inline absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) +
                             " (" + cudaGetErrorString(err) + ")");
}

// A temporary device buffer of `bytes` bytes that lives as long as *holder.
inline absl::Status AllocateBytes(tensorflow::OpKernelContext* ctx, int64_t bytes,
                                  tensorflow::Tensor* holder, void** ptr) {
  absl::Status s = ctx->allocate_temp(tensorflow::DT_INT8,
                                      tensorflow::TensorShape({bytes > 0 ? bytes : 1}), holder);
  if (!s.ok()) return s;
  *ptr = holder->flat<int8_t>().data();
  return absl::OkStatus();
}

// Temporary device array of `count` elements of T.
template <typename T>
absl::Status AllocateArray(tensorflow::OpKernelContext* ctx, int64_t count,
                           tensorflow::Tensor* holder, T** ptr) {
  void* raw = nullptr;
  absl::Status s =
      AllocateBytes(ctx, static_cast<int64_t>(sizeof(T)) * (count > 0 ? count : 1), holder, &raw);
  *ptr = static_cast<T*>(raw);
  return s;
}

// The first non-finite element of each of two device arrays a [size_a] and b [size_b] (one
// synchronisation for both): index[i] is its flat index or -1, value[i] the value there (0 when
// none), for i = 0 (a) and 1 (b).
template <typename T>
absl::Status FindNonFinite(tensorflow::OpKernelContext* ctx, cudaStream_t stream, const T* a,
                           int64_t size_a, const T* b, int64_t size_b, int64_t index[2],
                           T value[2]) {
  tensorflow::Tensor holder;
  unsigned long long* first = nullptr;
  KSEG_GPU_RETURN_IF_ERROR(AllocateArray(ctx, 2, &holder, &first));
  const T* data[2] = {a, b};
  const unsigned long long sizes[2] = {static_cast<unsigned long long>(size_a),
                                       static_cast<unsigned long long>(size_b)};
  const char* what = "checking the inputs for NaN and infinity";
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(first, sizes, sizeof(sizes), cudaMemcpyHostToDevice, stream), what));
  for (int i = 0; i < 2; ++i) {
    if (sizes[i] > 0)
      FirstNonFiniteKernel<T>
          <<<gpu::BlocksFor(static_cast<int64_t>(sizes[i])), gpu::kThreadsPerBlock, 0, stream>>>(
              data[i], static_cast<int64_t>(sizes[i]), first + i);
  }
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), what));
  unsigned long long found[2] = {0, 0};
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(found, first, sizeof(found), cudaMemcpyDeviceToHost, stream), what));
  // Also keeps `sizes` alive until its copy has run.
  KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), what));
  for (int i = 0; i < 2; ++i) {
    index[i] = found[i] < sizes[i] ? static_cast<int64_t>(found[i]) : -1;
    value[i] = T(0);
    if (index[i] < 0) continue;
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(&value[i], data[i] + index[i], sizeof(T), cudaMemcpyDeviceToHost, stream),
        what));
    KSEG_GPU_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), what));
  }
  return absl::OkStatus();
}

// Copies `count` counter blocks to the host and waits for the stream: the one synchronisation
// per lattice build (the vertex count sizes everything that follows).
inline absl::Status ReadCounters(cudaStream_t stream,
                                 const lattice::gpu::BuildCounters* const* device, int count,
                                 lattice::gpu::BuildCounters* host) {
  for (int i = 0; i < count; ++i) {
    absl::Status s = CudaStatus(
        cudaMemcpyAsync(&host[i], device[i], sizeof(host[i]), cudaMemcpyDeviceToHost, stream),
        "reading the lattice size");
    if (!s.ok()) return s;
  }
  return CudaStatus(cudaStreamSynchronize(stream), "waiting for the lattice construction");
}

// One lattice on the device; its memory lives as long as the object.
template <typename T>
class GpuLattice {
 public:
  // Phase one for n points with features [n, d] (row stride feature_stride). The buffers are
  // reused when the same object builds again with the same n and d.
  absl::Status Start(tensorflow::OpKernelContext* ctx, cudaStream_t stream, const T* features,
                     int64_t n, int d, int64_t feature_stride) {
    if (d < 1 || d > lattice::gpu::kMaxFeatureDim)
      return absl::InvalidArgumentError("feature dimension must be in [1, " +
                                        std::to_string(lattice::gpu::kMaxFeatureDim) +
                                        "]. Received: feature_dim=" + std::to_string(d));
    if (n < 0 || n >= (int64_t{1} << 31) / (d + 1))
      return absl::InvalidArgumentError("the number of points must be in [0, " +
                                        std::to_string((int64_t{1} << 31) / (d + 1)) +
                                        "). Received: n=" + std::to_string(n));
    if (phase_one_base_ == nullptr || n != n_ || d != d_) {
      const int64_t bytes = lattice::gpu::CarvePhaseOne<T>(nullptr, n, d, &buffers_);
      absl::Status s = AllocateBytes(ctx, bytes, &phase_one_, &phase_one_base_);
      if (!s.ok()) return s;
      lattice::gpu::CarvePhaseOne<T>(phase_one_base_, n, d, &buffers_);
    }
    n_ = n;
    d_ = d;
    return CudaStatus(
        lattice::gpu::LaunchBuildPhaseOne<T>(stream, features, n, d, feature_stride, buffers_),
        "lattice construction");
  }

  const lattice::gpu::BuildCounters* device_counters() const { return buffers_.counters; }

  // Why the features of the last Start cannot make a lattice (as the CPU lattice words it), or
  // an empty string, given the counters read back after Start.
  std::string BuildError(const lattice::gpu::BuildCounters& counters) const {
    if (counters.first_bad_point >= n_) return std::string();
    const double limit = static_cast<double>(1 << 28) / (d_ + 1);
    return "feature of point " + std::to_string(counters.first_bad_point) +
           " is not finite or too large for the lattice (|feature| must stay below about " +
           std::to_string(limit) + ")";
  }

  // Phase two, given the counters read back after Start. `what` names the features in errors.
  absl::Status Finish(tensorflow::OpKernelContext* ctx, cudaStream_t stream,
                      const lattice::gpu::BuildCounters& counters, const std::string& what) {
    const std::string error = BuildError(counters);
    if (!error.empty()) return absl::InvalidArgumentError(what + ": " + error);
    if (counters.table_full != 0 || counters.vertex_count < 0 ||
        counters.vertex_count > n_ * (d_ + 1))
      return absl::InternalError(what + ": lattice hash table overflow (" +
                                 std::to_string(counters.vertex_count) + " vertices)");
    const int64_t m = counters.vertex_count;
    const int64_t bytes = lattice::gpu::CarvePhaseTwo<T>(nullptr, n_, d_, m, &buffers_);
    void* base = nullptr;
    absl::Status s = AllocateBytes(ctx, bytes, &phase_two_, &base);
    if (!s.ok()) return s;
    lattice::gpu::CarvePhaseTwo<T>(base, n_, d_, m, &buffers_);
    return CudaStatus(lattice::gpu::LaunchBuildPhaseTwo<T>(stream, n_, d_, m, buffers_, &view_),
                      "lattice construction");
  }

  // Scratch for filtering `channels` channels: two arrays of (m + 1) * channels values.
  absl::Status PrepareFilter(tensorflow::OpKernelContext* ctx, int channels) {
    const int64_t count = (view_.m + 1) * channels;
    if (values_ != nullptr && count <= scratch_count_) return absl::OkStatus();
    KSEG_GPU_RETURN_IF_ERROR(AllocateArray<T>(ctx, count, &values_holder_, &values_));
    KSEG_GPU_RETURN_IF_ERROR(AllocateArray<T>(ctx, count, &scratch_holder_, &scratch_));
    scratch_count_ = count;
    return absl::OkStatus();
  }

  // out (+)= post_scale .* post_factor * L(pre_scale .* in); see Permutohedral::Filter.
  absl::Status Filter(tensorflow::OpKernelContext* ctx, cudaStream_t stream, const T* in,
                      int64_t in_stride, int channels, const T* pre_scale, const T* post_scale,
                      T post_factor, bool transpose, bool accumulate, T* out, int64_t out_stride) {
    absl::Status s = PrepareFilter(ctx, channels);
    if (!s.ok()) return s;
    return CudaStatus(lattice::gpu::LaunchFilter<T>(stream, view_, in, in_stride, channels,
                                                    pre_scale, post_scale, post_factor, transpose,
                                                    accumulate, out, out_stride, values_, scratch_),
                      "lattice filter");
  }

  int64_t num_vertices() const { return view_.m; }

 private:
  int64_t n_ = -1;
  int d_ = -1;
  tensorflow::Tensor phase_one_, phase_two_, values_holder_, scratch_holder_;
  void* phase_one_base_ = nullptr;
  T* values_ = nullptr;
  T* scratch_ = nullptr;
  int64_t scratch_count_ = 0;
  lattice::gpu::LatticeBuffers<T> buffers_;
  lattice::gpu::LatticeView<T> view_;
};

}  // namespace gpu_glue
}  // namespace kseg

#endif  // GOOGLE_CUDA
#endif  // KSEG_OPS_CC_KERNELS_LATTICE_GPU_GLUE_CU_H_
