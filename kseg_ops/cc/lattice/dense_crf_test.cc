// The CPU mean field of dense_crf.h against an exact O(N^2) mean field (the Gaussians the
// lattice approximates, summed over every pair of pixels) on tiny images, and its paths (fused
// AVX2, baseline, fixed and generic widths, the three kinds of scores) against each other.
#include "kseg_ops/cc/lattice/dense_crf.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kseg_ops/cc/testing/mini_test.h"

namespace {

using kseg::CrfNormalization;
using kseg::CrfScores;
using kseg::DenseCrfParams;
using kseg::ParallelFor;
using kseg::SerialFor;
using kseg::crf::DenseCrfCpu;

// Splits work into small chunks, in reverse order, to expose any dependence on the cut.
ParallelFor ChunkedFor(int64_t chunk) {
  return [chunk](int64_t total, double, const std::function<void(int64_t, int64_t)>& fn) {
    for (int64_t start = (total - 1) / chunk * chunk; start >= 0; start -= chunk)
      fn(start, std::min(total, start + chunk));
  };
}

struct Scene {
  int64_t h, w;
  int classes;
  std::vector<double> image;  // [h, w, 3] in 0..255
  std::vector<double> probs;  // [h, w, classes]
};

// Left and right halves of different colours; probabilities that favour the true class of each
// half (class 0 left, 1 right) only weakly and with noise, so that the CRF relabels pixels.
Scene MakeScene(int64_t h, int64_t w, int classes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  Scene s{h, w, classes, std::vector<double>(h * w * 3), std::vector<double>(h * w * classes)};
  for (int64_t p = 0; p < h * w; ++p) {
    const bool right = (p % w) * 2 >= w;
    for (int c = 0; c < 3; ++c)
      s.image[p * 3 + c] =
          std::clamp((right ? 40.0 + 60 * c : 200.0 - 50 * c) + 6 * noise(rng), 0.0, 255.0);
    std::vector<double> logits(classes);
    double total = 0;
    for (int c = 0; c < classes; ++c) {
      logits[c] = 1.2 * noise(rng) + (c == (right ? 1 : 0) ? 0.8 : 0.0);
      total += std::exp(logits[c]);
    }
    for (int c = 0; c < classes; ++c) s.probs[p * classes + c] = std::exp(logits[c]) / total;
  }
  return s;
}

// The mean field with exact kernels: Kn = D^-1/2 K D^-1/2 or D^-1 K, K_ij = exp(-|f_i - f_j|^2
// / 2), D = diag(K 1); as tests/kseg_ops/test_dense_crf.py's exact_mean_field.
std::vector<double> ExactMeanField(const Scene& s, const DenseCrfParams& p) {
  const int64_t n = s.h * s.w;
  const int c = s.classes;
  std::vector<std::vector<double>> kernels;
  for (int k = 0; k < 2; ++k) {
    std::vector<double> f(n * 5, 0.0);
    const int d = k == 0 ? 2 : 5;
    for (int64_t i = 0; i < n; ++i) {
      const double sxy = k == 0 ? p.gaussian_sxy : p.bilateral_sxy;
      f[i * 5] = static_cast<double>(i % s.w) / sxy;
      f[i * 5 + 1] = static_cast<double>(i / s.w) / sxy;
      for (int j = 0; k == 1 && j < 3; ++j)
        f[i * 5 + 2 + j] = s.image[i * 3 + j] / p.bilateral_srgb;
    }
    std::vector<double> kn(n * n), deg(n, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dist2 = 0;
        for (int a = 0; a < d; ++a)
          dist2 += (f[i * 5 + a] - f[j * 5 + a]) * (f[i * 5 + a] - f[j * 5 + a]);
        kn[i * n + j] = std::exp(-0.5 * dist2);
        deg[i] += kn[i * n + j];
      }
    const double compat = k == 0 ? p.gaussian_compat : p.bilateral_compat;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        kn[i * n + j] *= compat * (p.normalization == CrfNormalization::kSymmetric
                                       ? 1.0 / std::sqrt(deg[i] * deg[j])
                                       : 1.0 / deg[i]);
    kernels.push_back(std::move(kn));
  }
  std::vector<double> unary(n * c), q(n * c), pairwise(n * c);
  for (int64_t i = 0; i < n * c; ++i)
    unary[i] = -std::log(std::clamp(s.probs[i], kseg::kProbabilityClip, 1.0));
  auto softmax = [&](bool with_pairwise) {
    for (int64_t i = 0; i < n; ++i) {
      double m = -INFINITY, sum = 0;
      for (int k = 0; k < c; ++k)
        m = std::max(m, (with_pairwise ? pairwise[i * c + k] : 0.0) - unary[i * c + k]);
      for (int k = 0; k < c; ++k)
        sum += (q[i * c + k] =
                    std::exp((with_pairwise ? pairwise[i * c + k] : 0.0) - unary[i * c + k] - m));
      for (int k = 0; k < c; ++k) q[i * c + k] /= sum;
    }
  };
  softmax(false);
  for (int it = 0; it < p.iterations; ++it) {
    std::fill(pairwise.begin(), pairwise.end(), 0.0);
    for (const std::vector<double>& kn : kernels)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          for (int k = 0; k < c; ++k) pairwise[i * c + k] += kn[i * n + j] * q[j * c + k];
    softmax(true);
  }
  return q;
}

template <typename T>
std::vector<double> RunCrf(const Scene& s, const DenseCrfParams& p, bool allow_wide,
                           const ParallelFor& parallel_for = SerialFor()) {
  const int64_t size = s.h * s.w * s.classes;
  std::vector<T> scores(size), image(s.image.begin(), s.image.end()), q(size, T(-1));
  for (int64_t i = 0; i < size; ++i) {
    const double x = s.probs[i];
    scores[i] = static_cast<T>(p.scores == CrfScores::kProbabilities ? x
                               : p.scores == CrfScores::kLogits      ? std::log(x)
                                                                     : -std::log(x));
  }
  const std::string error = DenseCrfCpu<T>(p, scores.data(), image.data(), 1, s.h, s.w, s.classes,
                                           q.data(), parallel_for, allow_wide);
  if (!error.empty()) std::printf("  error: %s\n", error.c_str());
  KSEG_EXPECT(error.empty());
  return std::vector<double>(q.begin(), q.end());
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

std::vector<int> Labels(const std::vector<double>& q, int classes) {
  std::vector<int> labels(q.size() / classes);
  for (size_t i = 0; i < labels.size(); ++i)
    labels[i] =
        static_cast<int>(std::max_element(q.begin() + i * classes, q.begin() + (i + 1) * classes) -
                         q.begin() - i * classes);
  return labels;
}

DenseCrfParams SmallImageParams(CrfNormalization normalization) {
  // Kernels sized for a 6x5 image, and weights low enough that the parallel updates converge
  // (with the reference's 3 and 10 they flip whole regions back and forth on so few pixels, and
  // any approximation lands on another phase of the oscillation).
  DenseCrfParams p;
  p.iterations = 5;
  p.gaussian_sxy = 1.5f;
  p.gaussian_compat = 1.f;
  p.bilateral_sxy = 4.f;
  p.bilateral_srgb = 13.f;
  p.bilateral_compat = 2.f;
  p.normalization = normalization;
  p.scores = CrfScores::kProbabilities;
  return p;
}

// The lattice approximates each Gaussian by splatting, a [1 2 1] blur per axis and slicing
// (permutohedral_test: 12-38 % relative L2 error on the normalised filter for d = 2..5). Here Q
// agrees with the exact mean field to 0.005-0.043 (measured), against 0.04-0.42 for what the
// CRF changes in Q, so the tolerance is 0.06 and a quarter of the change, and every label agrees.
void CheckAgainstExact(int classes, uint32_t seed, CrfNormalization normalization) {
  const Scene s = MakeScene(5, 6, classes, seed);
  const DenseCrfParams p = SmallImageParams(normalization);
  const std::vector<double> exact = ExactMeanField(s, p);
  DenseCrfParams no_iterations = p;
  no_iterations.iterations = 0;
  const std::vector<double> q0 = ExactMeanField(s, no_iterations);
  const std::vector<int> exact_labels = Labels(exact, classes);
  const std::vector<int> q0_labels = Labels(q0, classes);
  int relabelled = 0;
  for (size_t i = 0; i < exact_labels.size(); ++i) relabelled += exact_labels[i] != q0_labels[i];
  const double moved = MaxAbsDiff(exact, q0);
  std::printf("  classes %d seed %u %s: CRF moves Q by up to %.3f, relabels %d of 30 pixels\n",
              classes, seed, normalization == CrfNormalization::kSymmetric ? "symmetric" : "after",
              moved, relabelled);
  KSEG_EXPECT(relabelled >= 3);  // the CRF really acts on this scene
  const double tol = std::min(0.06, 0.25 * moved);
  struct Variant {
    const char* name;
    std::vector<double> q;
  };
  const Variant variants[] = {{"float", RunCrf<float>(s, p, true)},
                              {"float baseline", RunCrf<float>(s, p, false)},
                              {"double", RunCrf<double>(s, p, true)}};
  for (const Variant& v : variants) {
    const double diff = MaxAbsDiff(v.q, exact);
    const std::vector<int> labels = Labels(v.q, classes);
    int agree = 0;
    for (size_t i = 0; i < labels.size(); ++i) agree += labels[i] == exact_labels[i];
    std::printf("    %-14s max |Q - exact| = %.4f, labels agree on %d of 30\n", v.name, diff,
                agree);
    KSEG_EXPECT(diff < tol);
    KSEG_EXPECT(agree == 30);
  }
}

KSEG_TEST(MeanFieldMatchesExactDenseKernels) {
  for (CrfNormalization normalization : {CrfNormalization::kSymmetric, CrfNormalization::kAfter})
    for (uint32_t seed : {1u, 2u}) CheckAgainstExact(3, seed, normalization);
}

// 37 classes take the generic-width path (rows of 40 channels).
KSEG_TEST(GenericWidthMatchesExactDenseKernels) {
  CheckAgainstExact(37, 3, CrfNormalization::kSymmetric);
}

// Zero iterations: Q = softmax(-unary) = the clipped, renormalised probabilities.
KSEG_TEST(ZeroIterationsGiveTheSoftmaxOfTheUnary) {
  const Scene s = MakeScene(5, 6, 3, 4);
  DenseCrfParams p = SmallImageParams(CrfNormalization::kSymmetric);
  p.iterations = 0;
  for (bool wide : {true, false}) {
    const std::vector<double> q = RunCrf<float>(s, p, wide);
    for (size_t i = 0; i < q.size(); ++i) KSEG_EXPECT_NEAR(q[i], s.probs[i], 2e-6);
  }
}

// Probabilities, logits (log p) and unary energies (-log p) are the same CRF.
KSEG_TEST(ScoreKindsAgree) {
  const Scene s = MakeScene(5, 6, 5, 5);
  DenseCrfParams p = SmallImageParams(CrfNormalization::kSymmetric);
  for (bool wide : {true, false}) {
    const std::vector<double> from_probs = RunCrf<float>(s, p, wide);
    for (CrfScores kind : {CrfScores::kLogits, CrfScores::kUnary}) {
      p.scores = kind;
      KSEG_EXPECT(MaxAbsDiff(RunCrf<float>(s, p, wide), from_probs) < 1e-5);
    }
    p.scores = CrfScores::kProbabilities;
  }
}

// On an image large enough for several fused ranges (8192 pixels: 2), the fused AVX2 mean field,
// the baseline one and float64 agree to rounding, and no result depends on how the work is cut.
KSEG_TEST(PathsAgreeOnALargerImage) {
  const Scene s = MakeScene(64, 128, 21, 6);
  DenseCrfParams p;
  p.scores = CrfScores::kProbabilities;
  const std::vector<double> wide = RunCrf<float>(s, p, true);
  const std::vector<double> baseline = RunCrf<float>(s, p, false);
  const std::vector<double> precise = RunCrf<double>(s, p, true);
  std::printf("  max |fused - baseline| = %.2e, max |float - double| = %.2e\n",
              MaxAbsDiff(wide, baseline), MaxAbsDiff(wide, precise));
  KSEG_EXPECT(MaxAbsDiff(wide, baseline) < 1e-4);
  KSEG_EXPECT(MaxAbsDiff(wide, precise) < 1e-4);
  KSEG_EXPECT(RunCrf<float>(s, p, true, ChunkedFor(37)) == wide);
  KSEG_EXPECT(RunCrf<float>(s, p, false, ChunkedFor(37)) == baseline);
  KSEG_EXPECT(RunCrf<double>(s, p, true, ChunkedFor(37)) == precise);
}

// A lattice that cannot be built is reported, naming the parameter and its value.
KSEG_TEST(UnusableFeaturesAreReported) {
  const Scene s = MakeScene(5, 6, 3, 7);
  DenseCrfParams p = SmallImageParams(CrfNormalization::kSymmetric);
  p.gaussian_sxy = 1e-30f;
  std::vector<float> probs(s.probs.begin(), s.probs.end()), image(s.image.begin(), s.image.end()),
      q(probs.size());
  std::string error =
      DenseCrfCpu<float>(p, probs.data(), image.data(), 1, 5, 6, 3, q.data(), SerialFor());
  std::printf("  %s\n", error.c_str());
  KSEG_EXPECT(error.find("gaussian_sxy") == 0);
  KSEG_EXPECT(error.find("Received: gaussian_sxy=1e-30") != std::string::npos);
  p.gaussian_sxy = 3.f;
  p.bilateral_srgb = 1e-35f;
  error = DenseCrfCpu<float>(p, probs.data(), image.data(), 1, 5, 6, 3, q.data(), SerialFor());
  std::printf("  %s\n", error.c_str());
  KSEG_EXPECT(error.find("image (batch element 0)") == 0);
  KSEG_EXPECT(error.find("Received: bilateral_sxy=4, bilateral_srgb=1e-35") != std::string::npos);
}

// Over the byte budget, or cancelled: an error of that kind, not a result or an abort.
KSEG_TEST(BudgetAndCancellationStopTheCall) {
  const Scene s = MakeScene(16, 12, 3, 9);
  DenseCrfParams p = SmallImageParams(CrfNormalization::kSymmetric);
  std::vector<float> probs(s.probs.begin(), s.probs.end()), image(s.image.begin(), s.image.end()),
      q(probs.size());
  const int64_t need = kseg::crf::CrfPointBytes<float>(16 * 12, 8);
  KSEG_EXPECT(need == 16 * 12 * (4 * (10 + 16) + 183));
  kseg::RunControl control;
  control.budget_bytes = need - 1;
  std::string error = DenseCrfCpu<float>(p, probs.data(), image.data(), 1, 16, 12, 3, q.data(),
                                         SerialFor(), true, &control);
  KSEG_EXPECT(control.failure == kseg::RunFailure::kOverBudget);
  KSEG_EXPECT(error.find("needs " + std::to_string(need) + " bytes") != std::string::npos);
  KSEG_EXPECT(error.find("scores.shape=[1, 16, 12, 3]") != std::string::npos);
  // Cancelled after two polls: the mean field stops and says so.
  kseg::RunControl cancel;
  int polls = 0;
  cancel.is_cancelled = [&polls] { return ++polls > 2; };
  p.iterations = 50;
  error = DenseCrfCpu<float>(p, probs.data(), image.data(), 1, 16, 12, 3, q.data(), SerialFor(),
                             true, &cancel);
  KSEG_EXPECT(cancel.failure == kseg::RunFailure::kCancelled);
  KSEG_EXPECT(error == "the dense CRF was cancelled");
  KSEG_EXPECT(polls < 10);
  p.iterations = kseg::kMaxCrfIterations + 1;
  error = DenseCrfCpu<float>(p, probs.data(), image.data(), 1, 16, 12, 3, q.data(), SerialFor());
  KSEG_EXPECT(error == "iterations must be in [0, 1000]. Received: iterations=1001");
}

// The cache counts what the scratch really holds, keeps it under the cap and frees it on release.
KSEG_TEST(ScratchCacheCountsCapacitiesAndReleases) {
  const Scene s = MakeScene(40, 30, 5, 11);
  const DenseCrfParams p = SmallImageParams(CrfNormalization::kAfter);
  kseg::ReleaseCachedScratch();
  RunCrf<double>(s, p, true, SerialFor());
  const int64_t held = kseg::CachedScratchBytes();
  // At least the per-pixel vectors' and both lattices' sizes (capacities are no smaller).
  KSEG_EXPECT(held >= kseg::crf::CrfPointBytes<double>(40 * 30, 8) / 2);
  KSEG_EXPECT(held <= kseg::kDefaultCacheBytes);
  KSEG_EXPECT(kseg::ReleaseCachedScratch() == held);
  KSEG_EXPECT(kseg::CachedScratchBytes() == 0);
}

}  // namespace

int main() { return kseg::testing::RunAll(); }
