// The CUDA FFT correlation of fft_conv_gpu.cuh (tiling, packing, channel contraction,
// unpacking), run on the host through cuda_host_emulation.h with a plain DFT in place of cuFFT,
// against brute-force sums for the forward pass and both gradients. Built and run by
// tests/kseg_ops/test_gpu_kernels.py.
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kseg_ops/cc/fft/fft_conv_gpu.cuh"
#include "kseg_ops/cc/testing/mini_test.h"

namespace {

using kseg::fft::Geometry;
namespace gpu = kseg::fft::gpu;

// Batched 2-D p x q real DFTs in the cuFFT layout: spectra p x (q / 2 + 1), unnormalised.
template <typename T>
class DftTransforms {
 public:
  using C = typename gpu::ComplexOf<T>::Type;
  DftTransforms(const Geometry& g, const gpu::GpuPlan& plan)
      : p_(plan.p),
        q_(plan.q),
        kernel_batch_(g.cin * g.cout),
        input_batch_(plan.group * g.cin),
        output_batch_(plan.group * g.cout) {}

  std::string KernelForward(T* r, C* s) { return Forward(r, s, kernel_batch_); }
  std::string KernelInverse(C* s, T* r) { return Inverse(s, r, kernel_batch_); }
  std::string InputForward(T* r, C* s) { return Forward(r, s, input_batch_); }
  std::string OutputForward(T* r, C* s) { return Forward(r, s, output_batch_); }
  std::string OutputInverse(C* s, T* r) { return Inverse(s, r, output_batch_); }

 private:
  using Z = std::complex<double>;
  Z Twiddle(int64_t k, int64_t n, double sign) const {
    const double a = sign * 2 * M_PI * static_cast<double>(k % n) / static_cast<double>(n);
    return Z(std::cos(a), std::sin(a));
  }

  std::string Forward(const T* real, C* spec, int64_t batch) const {
    const int64_t h = q_ / 2 + 1;
    for (int64_t b = 0; b < batch; ++b) {
      const T* x = real + b * p_ * q_;
      for (int64_t k1 = 0; k1 < p_; ++k1) {
        for (int64_t k2 = 0; k2 < h; ++k2) {
          Z sum = 0;
          for (int64_t u = 0; u < p_; ++u)
            for (int64_t v = 0; v < q_; ++v)
              sum += static_cast<double>(x[u * q_ + v]) *
                     Twiddle(k1 * u * q_ + k2 * v * p_, p_ * q_, -1);
          C& out = spec[(b * p_ + k1) * h + k2];
          out.x = static_cast<T>(sum.real());
          out.y = static_cast<T>(sum.imag());
        }
      }
    }
    return "";
  }

  std::string Inverse(const C* spec, T* real, int64_t batch) const {
    const int64_t h = q_ / 2 + 1;
    for (int64_t b = 0; b < batch; ++b) {
      // Full Hermitian spectrum, then the real part of the inverse DFT.
      std::vector<Z> full(p_ * q_);
      for (int64_t k1 = 0; k1 < p_; ++k1) {
        for (int64_t k2 = 0; k2 < q_; ++k2) {
          if (k2 < h) {
            const C& s = spec[(b * p_ + k1) * h + k2];
            full[k1 * q_ + k2] = Z(s.x, s.y);
          } else {
            const C& s = spec[(b * p_ + (p_ - k1) % p_) * h + (q_ - k2)];
            full[k1 * q_ + k2] = Z(s.x, -s.y);
          }
        }
      }
      for (int64_t u = 0; u < p_; ++u) {
        for (int64_t v = 0; v < q_; ++v) {
          Z sum = 0;
          for (int64_t k1 = 0; k1 < p_; ++k1)
            for (int64_t k2 = 0; k2 < q_; ++k2)
              sum += full[k1 * q_ + k2] * Twiddle(k1 * u * q_ + k2 * v * p_, p_ * q_, 1);
          real[(b * p_ + u) * q_ + v] = static_cast<T>(sum.real());
        }
      }
    }
    return "";
  }

  int64_t p_, q_, kernel_batch_, input_batch_, output_batch_;
};

template <typename T>
std::vector<T> Random(int64_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist;
  std::vector<T> v(size);
  for (T& x : v) x = static_cast<T>(dist(rng));
  return v;
}

struct Case {
  int64_t batch, h, w, cin, kh, kw, cout;
  bool same;
};

// Brute-force references in double.
std::vector<double> DirectForward(const Geometry& g, const std::vector<double>& in,
                                  const std::vector<double>& k) {
  std::vector<double> out(g.batch * g.out_h * g.out_w * g.cout, 0.0);
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t y = 0; y < g.out_h; ++y)
      for (int64_t x = 0; x < g.out_w; ++x)
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t sy = y + i - g.pad_top, sx = x + j - g.pad_left;
            if (sy < 0 || sy >= g.in_h || sx < 0 || sx >= g.in_w) continue;
            for (int64_t c = 0; c < g.cin; ++c)
              for (int64_t o = 0; o < g.cout; ++o)
                out[((b * g.out_h + y) * g.out_w + x) * g.cout + o] +=
                    in[((b * g.in_h + sy) * g.in_w + sx) * g.cin + c] *
                    k[((i * g.kw + j) * g.cin + c) * g.cout + o];
          }
  return out;
}

// d/d input and d/d kernel of sum(out * grad).
void DirectGradients(const Geometry& g, const std::vector<double>& in, const std::vector<double>& k,
                     const std::vector<double>& grad, std::vector<double>* grad_in,
                     std::vector<double>* grad_k) {
  grad_in->assign(in.size(), 0.0);
  grad_k->assign(k.size(), 0.0);
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t y = 0; y < g.out_h; ++y)
      for (int64_t x = 0; x < g.out_w; ++x)
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t sy = y + i - g.pad_top, sx = x + j - g.pad_left;
            if (sy < 0 || sy >= g.in_h || sx < 0 || sx >= g.in_w) continue;
            for (int64_t c = 0; c < g.cin; ++c)
              for (int64_t o = 0; o < g.cout; ++o) {
                const double go = grad[((b * g.out_h + y) * g.out_w + x) * g.cout + o];
                const int64_t ii = ((b * g.in_h + sy) * g.in_w + sx) * g.cin + c;
                const int64_t kk = ((i * g.kw + j) * g.cin + c) * g.cout + o;
                (*grad_in)[ii] += go * k[kk];
                (*grad_k)[kk] += go * in[ii];
              }
          }
}

template <typename T>
double MaxRelativeError(const std::vector<T>& got, const std::vector<double>& want) {
  double worst = 0, scale = 1;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  return worst / scale;
}

template <typename T>
std::vector<T> RunGpu(const Geometry& g, bool kernel_gradient, const std::vector<T>& a,
                      const std::vector<T>& b, bool flip, int64_t out_size, int64_t group_budget) {
  const kseg::fft::TilePlan tp = kseg::fft::ChooseTilePlan(g, sizeof(T), 1);
  const gpu::GpuPlan plan = gpu::MakeGpuPlan<T>(g, tp, group_budget);
  gpu::Buffers<T> buf;
  std::vector<std::max_align_t> memory(
      gpu::CarveBuffers<T>(nullptr, g, plan, &buf) / sizeof(std::max_align_t) + 1);
  gpu::CarveBuffers<T>(memory.data(), g, plan, &buf);
  DftTransforms<T> dft(g, plan);
  std::vector<T> out(out_size, T(-9));
  const std::string error =
      kernel_gradient
          ? gpu::RunKernelGradient<T>(nullptr, g, plan, a.data(), b.data(), out.data(), buf, dft)
          : gpu::RunCorrelation<T>(nullptr, g, plan, a.data(), b.data(), flip, out.data(), buf,
                                   dft);
  KSEG_EXPECT(error.empty());
  return out;
}

template <typename T>
void CheckCase(const Case& c, int64_t group_budget, double tol) {
  const Geometry g = kseg::fft::ConvGeometry(c.batch, c.h, c.w, c.cin, c.kh, c.kw, c.cout, c.same);
  const uint32_t seed = static_cast<uint32_t>(c.h * 31 + c.kw * 7 + c.cin);
  const std::vector<double> in = Random<double>(g.batch * g.in_h * g.in_w * g.cin, seed);
  const std::vector<double> k = Random<double>(g.kh * g.kw * g.cin * g.cout, seed + 1);
  const std::vector<double> grad = Random<double>(g.batch * g.out_h * g.out_w * g.cout, seed + 2);
  const std::vector<T> in_t(in.begin(), in.end()), k_t(k.begin(), k.end()),
      grad_t(grad.begin(), grad.end());
  std::vector<double> want_in, want_k;
  DirectGradients(g, in, k, grad, &want_in, &want_k);

  const double forward = MaxRelativeError(
      RunGpu<T>(g, false, in_t, k_t, false, static_cast<int64_t>(grad.size()), group_budget),
      DirectForward(g, in, k));
  const double input_grad =
      MaxRelativeError(RunGpu<T>(kseg::fft::InputGradientGeometry(g), false, grad_t, k_t, true,
                                 static_cast<int64_t>(in.size()), group_budget),
                       want_in);
  const double kernel_grad = MaxRelativeError(
      RunGpu<T>(g, true, in_t, grad_t, false, static_cast<int64_t>(k.size()), group_budget),
      want_k);
  if (!(forward < tol && input_grad < tol && kernel_grad < tol))
    std::printf("  %lldx%lldx%lld k%lldx%lld -> %lld %s: errors %g %g %g\n",
                static_cast<long long>(c.h), static_cast<long long>(c.w),
                static_cast<long long>(c.cin), static_cast<long long>(c.kh),
                static_cast<long long>(c.kw), static_cast<long long>(c.cout),
                c.same ? "SAME" : "VALID", forward, input_grad, kernel_grad);
  KSEG_EXPECT(forward < tol);
  KSEG_EXPECT(input_grad < tol);
  KSEG_EXPECT(kernel_grad < tol);
}

const Case kCases[] = {
    {2, 9, 11, 2, 3, 3, 3, true},  {1, 12, 7, 3, 4, 2, 2, true}, {2, 10, 13, 1, 5, 7, 5, true},
    {1, 14, 9, 2, 6, 3, 1, false}, {3, 8, 8, 2, 1, 1, 2, true},  {1, 20, 18, 1, 11, 9, 2, false},
    {1, 6, 30, 2, 1, 13, 2, true},
};

KSEG_TEST(DoubleMatchesDirectSums) {
  for (const Case& c : kCases) CheckCase<double>(c, int64_t{256} << 20, 1e-10);
}

KSEG_TEST(FloatMatchesDirectSums) {
  for (const Case& c : kCases) CheckCase<float>(c, int64_t{256} << 20, 1e-5);
}

// A tiny budget forces one tile per group: many groups, and accumulation across groups for
// the kernel gradient.
KSEG_TEST(OneTilePerGroupMatchesDirectSums) {
  for (const Case& c : kCases) CheckCase<double>(c, 1, 1e-10);
}

}  // namespace

int main() { return kseg::testing::RunAll(); }
