// The CUDA lattice of permutohedral_gpu.cuh, run on the host through cuda_host_emulation.h,
// against the CPU lattice of permutohedral.h: same simplex weights, the same partition of simplex
// corners into vertices, the same filter output (plain, transposed, scaled, accumulated), and the
// same rejection of non-finite features. Built and run by tests/kseg_ops/test_gpu_kernels.py.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "kseg_ops/cc/lattice/permutohedral_gpu.cuh"
#include "kseg_ops/cc/lattice/permutohedral.h"
#include "kseg_ops/cc/testing/mini_test.h"
#include "tests/kseg_ops/emulated_lattice.h"

namespace {

namespace gpu = kseg::lattice::gpu;
static_assert(gpu::kMaxFeatureDim == kseg::lattice::kMaxFeatureDim,
              "GPU and CPU lattices must accept the same feature dimensions");
using kseg::lattice::FilterWorkspace;
using kseg::lattice::Permutohedral;
using kseg::lattice::SerialFor;
using kseg::testing::EmulatedLattice;

template <typename T>
std::vector<T> Random(int64_t size, double lo, double hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(size);
  for (T& x : v) x = static_cast<T>(dist(rng));
  return v;
}

// Features with repeated points and points on a coarse grid (ties in the rounding steps).
template <typename T>
std::vector<T> TrickyFeatures(int64_t n, int d, uint32_t seed) {
  std::vector<T> f = Random<T>(n * d, -4.0, 4.0, seed);
  for (int64_t p = 0; p < n; ++p) {
    if (p % 5 == 1)
      for (int i = 0; i < d; ++i) f[p * d + i] = f[(p - 1) * d + i];
    if (p % 7 == 3)
      for (int i = 0; i < d; ++i) f[p * d + i] = static_cast<T>(std::round(f[p * d + i] * 2) / 2);
  }
  return f;
}

template <typename T>
void CompareWithCpu(int64_t n, int d, int channels, uint32_t seed, double tol) {
  const std::vector<T> features = TrickyFeatures<T>(n, d, seed);
  Permutohedral<T> cpu;
  KSEG_EXPECT(cpu.Build(features.data(), n, d, d, SerialFor()).empty());
  EmulatedLattice<T> emu;
  emu.Build(features, n, d);
  KSEG_EXPECT(emu.counters.first_bad_point == n);
  KSEG_EXPECT(emu.counters.table_full == 0);
  KSEG_EXPECT(emu.counters.vertex_count == cpu.num_vertices());

  // Same weights, and corners share a GPU vertex exactly when they share a CPU vertex.
  std::map<int32_t, int32_t> gpu_to_cpu, cpu_to_gpu;
  bool same_partition = true, same_weights = true;
  for (int64_t p = 0; p < n; ++p) {
    for (int k = 0; k <= d; ++k) {
      const int32_t g = emu.buffers.entry_vertex[p * (d + 1) + k];
      const int32_t c = cpu.vertex(p, k);
      auto [it1, new1] = gpu_to_cpu.emplace(g, c);
      auto [it2, new2] = cpu_to_gpu.emplace(c, g);
      if (it1->second != c || it2->second != g) same_partition = false;
      if (emu.buffers.entry_weight[p * (d + 1) + k] != cpu.weight(p, k)) same_weights = false;
    }
  }
  KSEG_EXPECT(same_partition);
  KSEG_EXPECT(same_weights);

  const std::vector<T> in = Random<T>(n * channels, -1.0, 2.0, seed + 1);
  const std::vector<T> pre = Random<T>(n, 0.5, 1.5, seed + 2);
  const std::vector<T> post = Random<T>(n, 0.5, 1.5, seed + 3);
  const std::vector<T> start = Random<T>(n * channels, -1.0, 1.0, seed + 4);
  FilterWorkspace<T> ws;
  for (int variant = 0; variant < 4; ++variant) {
    const bool transpose = variant & 1;
    const bool scaled = variant & 2;
    const T* pre_ptr = scaled ? pre.data() : nullptr;
    const T* post_ptr = scaled ? post.data() : nullptr;
    const T factor = scaled ? T(2.5) : T(1);
    std::vector<T> want = start, got = start;
    cpu.Filter(in.data(), channels, channels, pre_ptr, post_ptr, factor, transpose, scaled,
               want.data(), channels, &ws, SerialFor());
    emu.Filter(in, channels, pre_ptr, post_ptr, factor, transpose, scaled, &got);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(want[i]) - got[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
    }
    if (!(worst <= tol * std::max(scale, 1.0)))
      std::printf("  n=%lld d=%d variant=%d: max |gpu - cpu| = %g (scale %g)\n",
                  static_cast<long long>(n), d, variant, worst, scale);
    KSEG_EXPECT(worst <= tol * std::max(scale, 1.0));
  }
}

KSEG_TEST(FloatLatticesMatchCpu) {
  for (int d : {1, 2, 3, 5, 8})
    for (int64_t n : {1, 2, 9, 400}) CompareWithCpu<float>(n, d, 3, 100 + d * 7 + n, 2e-5);
}

KSEG_TEST(DoubleLatticesMatchCpu) {
  for (int d : {1, 2, 5, 16})
    for (int64_t n : {1, 13, 300}) CompareWithCpu<double>(n, d, 2, 500 + d * 3 + n, 1e-12);
}

KSEG_TEST(ManyChannelsAndLargerImage) { CompareWithCpu<float>(3000, 5, 21, 77, 2e-5); }

// All points equal: d + 1 vertices with n entries each, so every vertex spans many splat runs.
KSEG_TEST(IdenticalPointsShareOneSimplex) {
  const int64_t n = 700;
  const int d = 5;
  std::vector<double> f(n * d);
  for (int64_t i = 0; i < n * d; ++i) f[i] = 0.37 * (i % d) - 0.5;
  Permutohedral<double> cpu;
  KSEG_EXPECT(cpu.Build(f.data(), n, d, d, SerialFor()).empty());
  EmulatedLattice<double> emu;
  emu.Build(f, n, d);
  KSEG_EXPECT(emu.counters.vertex_count == d + 1);
  const std::vector<double> in = Random<double>(n * 2, -1, 1, 3);
  std::vector<double> want(n * 2), got(n * 2);
  FilterWorkspace<double> ws;
  cpu.Filter(in.data(), 2, 2, nullptr, nullptr, 1.0, false, false, want.data(), 2, &ws,
             SerialFor());
  emu.Filter(in, 2, nullptr, nullptr, 1.0, false, false, &got);
  for (int64_t i = 0; i < n * 2; ++i) KSEG_EXPECT_NEAR(got[i], want[i], 1e-9);
}

KSEG_TEST(EmptyInputBuildsNothing) {
  EmulatedLattice<float> emu;
  emu.Build(std::vector<float>(), 0, 3);
  KSEG_EXPECT(emu.counters.vertex_count == 0);
  KSEG_EXPECT(emu.counters.first_bad_point == 0);
}

KSEG_TEST(NonFiniteFeatureIsReportedWithItsPoint) {
  for (double bad : {std::nan(""), HUGE_VAL, 1e30}) {
    std::vector<double> f = Random<double>(20 * 2, -3, 3, 9);
    f[11 * 2 + 1] = bad;
    f[15 * 2] = bad;
    EmulatedLattice<double> emu;
    emu.Build(f, 20, 2);
    KSEG_EXPECT(emu.counters.first_bad_point == 11);
  }
}

// <L x, y> == <x, L^T y>: the transposed filter is the adjoint (checked without the CPU code).
KSEG_TEST(TransposedFilterIsTheAdjoint) {
  for (int d : {2, 5}) {
    const int64_t n = 200;
    const std::vector<double> f = TrickyFeatures<double>(n, d, 31 + d);
    EmulatedLattice<double> emu;
    emu.Build(f, n, d);
    const std::vector<double> x = Random<double>(n, -1, 1, 5), y = Random<double>(n, -1, 1, 6);
    std::vector<double> lx(n), lty(n);
    emu.Filter(x, 1, nullptr, nullptr, 1.0, false, false, &lx);
    emu.Filter(y, 1, nullptr, nullptr, 1.0, true, false, &lty);
    double a = 0, b = 0;
    for (int64_t i = 0; i < n; ++i) {
      a += lx[i] * y[i];
      b += x[i] * lty[i];
    }
    KSEG_EXPECT_NEAR(a, b, 1e-10 * (std::fabs(a) + 1));
  }
}

}  // namespace

int main() { return kseg::testing::RunAll(); }
