// Parameters of the dense CRF's mean-field inference (Kraehenbuehl & Koltun 2011), shared by the
// CPU code (dense_crf.h), the GPU code (dense_crf_gpu.cuh via the op glue) and the op. TF-free
// and free of intrinsics, so that nvcc can include it. The math, both devices:
//   Q0 = softmax(-unary); repeat `iterations` times:
//   Q = softmax(-unary + sum_k compat_k * Kn_k(Q)),
// with two kernels k: gaussian, features (x / gaussian_sxy, y / gaussian_sxy), and bilateral,
// features (x / bilateral_sxy, y / bilateral_sxy, r / bilateral_srgb, g / .., b / ..), x the
// column, y the row, rgb in 0..255. L_k is the permutohedral filter of permutohedral.h (the pixel
// itself included) and D_k = diag(L_k 1):
//   kSymmetric: Kn = D^-1/2 L D^-1/2 (the reference's default),
//   kAfter:     Kn = D^-1 L          (DeepLab's 2011 code),
// where D^-1/2 is computed as 1 / sqrt(D + 1e-20) and D^-1 as 1 / (D + 1e-20).
#ifndef KSEG_OPS_CC_LATTICE_DENSE_CRF_PARAMS_H_
#define KSEG_OPS_CC_LATTICE_DENSE_CRF_PARAMS_H_

#include <cstdint>
#include <cstdio>
#include <string>

namespace kseg {

enum class CrfNormalization { kSymmetric = 0, kAfter = 1 };

// What the scores hold: unary energies, probabilities (unary = -log(clip(p, kProbabilityClip,
// 1)), as the reference computes it) or logits (unary = -logits).
enum class CrfScores { kUnary = 0, kProbabilities = 1, kLogits = 2 };
constexpr double kProbabilityClip = 1e-5;

// The most mean-field iterations one call runs (the reference converges within tens; the cap
// bounds how long a call can take). The op and the Python wrapper refuse more.
constexpr int kMaxCrfIterations = 1000;

// Empty when `iterations` is allowed, else the error.
inline std::string CrfIterationsError(int iterations) {
  if (iterations >= 0 && iterations <= kMaxCrfIterations) return std::string();
  return "iterations must be in [0, " + std::to_string(kMaxCrfIterations) +
         "]. Received: iterations=" + std::to_string(iterations);
}

struct DenseCrfParams {
  int iterations = 10;
  float gaussian_sxy = 3.f;
  float gaussian_compat = 3.f;
  float bilateral_sxy = 80.f;
  float bilateral_srgb = 13.f;
  float bilateral_compat = 10.f;
  CrfNormalization normalization = CrfNormalization::kSymmetric;
  CrfScores scores = CrfScores::kUnary;
};

// The name of the op input that holds scores of this kind (in error messages).
inline const char* ScoresName(CrfScores kind) {
  switch (kind) {
    case CrfScores::kProbabilities:
      return "probabilities";
    case CrfScores::kLogits:
      return "logits";
    default:
      return "unary";
  }
}

// A parameter value as absl::StrCat prints it (six significant digits).
inline std::string CrfNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

// The error when a lattice cannot be built from the features of image `batch_element`
// (`detail` says which pixel and why), CPU and GPU alike.
inline std::string CrfLatticeError(const DenseCrfParams& p, bool bilateral, int64_t batch_element,
                                   const std::string& detail) {
  if (!bilateral)
    return "gaussian_sxy makes the pixel positions unusable for the lattice (" + detail +
           "). Received: gaussian_sxy=" + CrfNumber(p.gaussian_sxy);
  return "image (batch element " + std::to_string(batch_element) +
         ") is unusable for the bilateral lattice with these bilateral_sxy and bilateral_srgb (" +
         detail + "). Received: bilateral_sxy=" + CrfNumber(p.bilateral_sxy) +
         ", bilateral_srgb=" + CrfNumber(p.bilateral_srgb);
}

}  // namespace kseg

#endif  // KSEG_OPS_CC_LATTICE_DENSE_CRF_PARAMS_H_
