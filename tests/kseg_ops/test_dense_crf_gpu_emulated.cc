// The CUDA mean-field inference of dense_crf_gpu.cuh (features, normalisers, softmax, the
// pairwise term from both lattices), run on the host through cuda_host_emulation.h, against the
// CPU kernel's own mean field (dense_crf.h). Built and run by tests/kseg_ops/test_gpu_kernels.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kseg_ops/cc/lattice/dense_crf.h"
#include "kseg_ops/cc/lattice/dense_crf_gpu.cuh"
#include "kseg_ops/cc/testing/mini_test.h"
#include "tests/kseg_ops/emulated_lattice.h"

namespace {

using kseg::lattice::SerialFor;
using kseg::testing::EmulatedLattice;
namespace crf = kseg::crf::gpu;

struct Scene {
  int64_t h, w;
  int channels;
};

// Two colour regions with noise, and random unaries -log(p).
template <typename T>
void MakeInputs(const Scene& s, uint32_t seed, std::vector<T>* unary, std::vector<T>* image) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> noise(0, 25), prob(0.05, 1);
  const int64_t n = s.h * s.w;
  image->resize(n * 3);
  unary->resize(n * s.channels);
  for (int64_t p = 0; p < n; ++p) {
    const bool right = (p % s.w) * 2 >= s.w;
    for (int c = 0; c < 3; ++c)
      (*image)[p * 3 + c] = static_cast<T>((right ? 180 : 20) + noise(rng));
    double total = 0;
    std::vector<double> pr(s.channels);
    for (double& x : pr) total += (x = prob(rng));
    for (int c = 0; c < s.channels; ++c)
      (*unary)[p * s.channels + c] = static_cast<T>(-std::log(pr[c] / total));
  }
}

// The CPU kernel itself (kseg_ops/cc/lattice/dense_crf.h) on the same unary energies.
template <typename T>
std::vector<T> CpuCrf(const Scene& s, const crf::MeanFieldSettings& settings, float gs, float bs,
                      float br, const std::vector<T>& unary, const std::vector<T>& image) {
  kseg::DenseCrfParams params;
  params.iterations = settings.iterations;
  params.gaussian_sxy = gs;
  params.gaussian_compat = settings.gaussian_compat;
  params.bilateral_sxy = bs;
  params.bilateral_srgb = br;
  params.bilateral_compat = settings.bilateral_compat;
  params.normalization =
      settings.symmetric ? kseg::CrfNormalization::kSymmetric : kseg::CrfNormalization::kAfter;
  params.scores = kseg::CrfScores::kUnary;
  std::vector<T> q(unary.size(), T(-1));
  const std::string error = kseg::crf::DenseCrfCpu<T>(params, unary.data(), image.data(), 1, s.h,
                                                      s.w, s.channels, q.data(), SerialFor());
  KSEG_EXPECT(error.empty());
  return q;
}

template <typename T>
void CheckCrf(const Scene& s, int iterations, bool symmetric, double tol) {
  const float gs = 3.f, bs = 6.f, br = 13.f;
  std::vector<T> unary, image;
  MakeInputs<T>(s, static_cast<uint32_t>(s.h * 100 + s.w + iterations), &unary, &image);
  crf::MeanFieldSettings settings;
  settings.iterations = iterations;
  settings.gaussian_compat = 3.f;
  settings.bilateral_compat = 10.f;
  settings.symmetric = symmetric;
  const std::vector<T> want = CpuCrf<T>(s, settings, gs, bs, br, unary, image);

  const int64_t n = s.h * s.w;
  std::vector<T> features(n * 7, T(-3)), ones(n, T(-3)), norms(2 * n, T(-3)),
      pairwise(n * s.channels, T(-3)), q(n * s.channels, T(-3));
  KSEG_EXPECT(crf::LaunchCrfFeatures<T>(nullptr, image.data(), n, s.w, gs, bs, br, features.data(),
                                        features.data() + 2 * n)
                  .empty());
  EmulatedLattice<T> gaussian, bilateral;
  gaussian.Build(features.data(), n, 2);
  bilateral.Build(features.data() + 2 * n, n, 5);
  auto filter_with = [](EmulatedLattice<T>* lattice) {
    return [lattice](const T* in, int64_t in_stride, int channels, const T* pre, const T* post,
                     T factor, bool accumulate, T* out, int64_t out_stride) {
      lattice->Filter(in, in_stride, channels, pre, post, factor, false, accumulate, out,
                      out_stride);
      return true;
    };
  };
  const std::string error = crf::RunMeanField<T>(
      nullptr, settings, n, s.channels, unary.data(), ones.data(), norms.data(), pairwise.data(),
      q.data(), filter_with(&gaussian), filter_with(&bilateral));
  KSEG_EXPECT(error.empty());
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(q[i]) - want[i]));
  if (!(worst < tol))
    std::printf("  %lldx%lld c=%d it=%d symmetric=%d: max |gpu - cpu| = %g\n",
                static_cast<long long>(s.h), static_cast<long long>(s.w), s.channels, iterations,
                symmetric, worst);
  KSEG_EXPECT(worst < tol);
}

KSEG_TEST(DoubleMeanFieldMatchesCpuLattice) {
  for (bool symmetric : {true, false})
    for (int it : {0, 1, 4}) CheckCrf<double>({11, 14, 4}, it, symmetric, 1e-10);
}

KSEG_TEST(FloatMeanFieldMatchesCpuLattice) {
  for (bool symmetric : {true, false}) CheckCrf<float>({16, 13, 21}, 5, symmetric, 2e-5);
}

// A failing filter stops the inference and is reported.
KSEG_TEST(FilterFailureIsReported) {
  std::vector<double> unary(6, 0.5), q(6), ones(3), norms(6), pairwise(6);
  auto fail = [](const double*, int64_t, int, const double*, const double*, double, bool, double*,
                 int64_t) { return false; };
  const std::string error =
      crf::RunMeanField<double>(nullptr, crf::MeanFieldSettings(), 3, 2, unary.data(), ones.data(),
                                norms.data(), pairwise.data(), q.data(), fail, fail);
  KSEG_EXPECT(error == "filter");
}

}  // namespace

int main() { return kseg::testing::RunAll(); }
