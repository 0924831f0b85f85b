// Checks the TF-free FFT correlation core against brute-force sums (forward, input gradient,
// kernel gradient) on random shapes, in float and double. Prints one line per case and exits
// non-zero on the first mismatch. Built and run by test_fft_conv_core.py.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kseg_ops/cc/fft/fft_conv_core.h"

namespace {

using kseg::fft::Geometry;

template <typename T>
std::vector<T> Random(std::mt19937& rng, size_t n) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(rng));
  return v;
}

double At(const std::vector<double>& x, const Geometry& g, int64_t b, int64_t y, int64_t xx,
          int64_t c) {
  if (y < 0 || y >= g.in_h || xx < 0 || xx >= g.in_w) return 0.0;
  return x[((b * g.in_h + y) * g.in_w + xx) * g.cin + c];
}

// Brute-force correlation in double.
std::vector<double> Direct(const Geometry& g, const std::vector<double>& x,
                           const std::vector<double>& k) {
  std::vector<double> out(g.batch * g.out_h * g.out_w * g.cout, 0.0);
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t y = 0; y < g.out_h; ++y)
      for (int64_t xx = 0; xx < g.out_w; ++xx)
        for (int64_t o = 0; o < g.cout; ++o) {
          double s = 0;
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j)
              for (int64_t c = 0; c < g.cin; ++c)
                s += At(x, g, b, y + i - g.pad_top, xx + j - g.pad_left, c) *
                     k[((i * g.kw + j) * g.cin + c) * g.cout + o];
          out[((b * g.out_h + y) * g.out_w + xx) * g.cout + o] = s;
        }
  return out;
}

// Brute-force gradients of sum(out * dy).
void DirectGrads(const Geometry& g, const std::vector<double>& x, const std::vector<double>& k,
                 const std::vector<double>& dy, std::vector<double>* dx, std::vector<double>* dk) {
  dx->assign(x.size(), 0.0);
  dk->assign(k.size(), 0.0);
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t y = 0; y < g.out_h; ++y)
      for (int64_t xx = 0; xx < g.out_w; ++xx)
        for (int64_t o = 0; o < g.cout; ++o) {
          const double d = dy[((b * g.out_h + y) * g.out_w + xx) * g.cout + o];
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t iy = y + i - g.pad_top, ix = xx + j - g.pad_left;
              if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
              for (int64_t c = 0; c < g.cin; ++c) {
                const int64_t xi = ((b * g.in_h + iy) * g.in_w + ix) * g.cin + c;
                const int64_t ki = ((i * g.kw + j) * g.cin + c) * g.cout + o;
                (*dx)[xi] += d * k[ki];
                (*dk)[ki] += d * x[xi];
              }
            }
        }
}

template <typename T>
double RelativeError(const std::vector<T>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(got[i]) - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return num / std::max(den, 1e-30);
}

template <typename T>
bool Check(std::mt19937& rng, const Geometry& g, const kseg::fft::TilePlan& tp, double tol,
           const char* what) {
  namespace impl = kseg::fft::generic;
  std::vector<T> x = Random<T>(rng, g.batch * g.in_h * g.in_w * g.cin);
  std::vector<T> k = Random<T>(rng, g.kh * g.kw * g.cin * g.cout);
  std::vector<T> dy = Random<T>(rng, g.batch * g.out_h * g.out_w * g.cout);
  std::vector<double> xd(x.begin(), x.end()), kd(k.begin(), k.end()), dyd(dy.begin(), dy.end());
  std::vector<T> out(dy.size()), dx(x.size()), dk(k.size());
  std::string err =
      impl::Correlate<T>(g, tp, x.data(), k.data(), out.data(), kseg::fft::SerialFor());
  if (err.empty())
    err = impl::CorrelateBackpropInput<T>(g, dy.data(), k.data(), dx.data(), 1,
                                          kseg::fft::SerialFor());
  if (err.empty())
    err = impl::CorrelateBackpropFilter<T>(g, tp, x.data(), dy.data(), dk.data(),
                                           kseg::fft::SerialFor());
  if (!err.empty()) {
    std::printf("FAIL %s: error %s\n", what, err.c_str());
    return false;
  }
  std::vector<double> want_dx, want_dk;
  DirectGrads(g, xd, kd, dyd, &want_dx, &want_dk);
  const double e_out = RelativeError(out, Direct(g, xd, kd));
  const double e_dx = RelativeError(dx, want_dx), e_dk = RelativeError(dk, want_dk);
  const bool ok = e_out < tol && e_dx < tol && e_dk < tol;
  std::printf(
      "%s %s b%ld %ldx%ldx%ld k%ldx%ld ->%ld pad %ld,%ld fft %ldx%ld tiles %ldx%ld: err %.2e %.2e "
      "%.2e\n",
      ok ? "ok  " : "FAIL", what, (long)g.batch, (long)g.in_h, (long)g.in_w, (long)g.cin,
      (long)g.kh, (long)g.kw, (long)g.cout, (long)g.pad_top, (long)g.pad_left, (long)tp.nh,
      (long)tp.nw, (long)tp.tiles_y, (long)tp.tiles_x, e_out, e_dx, e_dk);
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  bool ok = true;
  // FFT sizes alone: every radix and the real split, against a naive DFT through a 1-row window.
  for (int trial = 0; trial < 60 && ok; ++trial) {
    std::uniform_int_distribution<int> size(1, 13), chan(1, 5);
    const int64_t h = size(rng), w = size(rng), kh = size(rng) % std::max<int64_t>(h, 1) + 1,
                  kw = size(rng) % std::max<int64_t>(w, 1) + 1;
    const bool same = trial % 2 == 0;
    Geometry g = kseg::fft::ConvGeometry(1 + trial % 2, h, w, chan(rng), kh, kw, chan(rng), same);
    if (!kseg::fft::ValidateGeometry(g).empty()) continue;
    kseg::fft::TilePlan tp = kseg::fft::ChooseTilePlan(g, sizeof(double), 1);
    ok &= Check<double>(rng, g, tp, 1e-10, "double auto");
    ok &= Check<float>(rng, g, tp, 1e-4, "float auto ");
    // Force small tiles (many tiles, partial edge tiles, odd sizes with radix 3 and 5).
    for (int64_t nh : {kh + 1, kh + 3}) {
      for (int64_t nw : {kw + 2, kw + 5}) {
        kseg::fft::TilePlan t2;
        t2.nh = kseg::fft::NextFastSize(nh, false);
        t2.nw = kseg::fft::NextFastSize(nw, true);
        t2.tile_h = t2.nh - kh + 1;
        t2.tile_w = t2.nw - kw + 1;
        t2.tiles_y = (g.out_h + t2.tile_h - 1) / t2.tile_h;
        t2.tiles_x = (g.out_w + t2.tile_w - 1) / t2.tile_w;
        t2.group = 1 + trial % 3;
        ok &= Check<double>(rng, g, t2, 1e-10, "double tile");
      }
    }
  }
  // A larger case through the chooser, with a group smaller than the tile count.
  Geometry g = kseg::fft::ConvGeometry(2, 40, 37, 6, 9, 8, 5, true);
  kseg::fft::TilePlan tp = kseg::fft::ChooseTilePlan(g, sizeof(float), 2, int64_t{512} << 20, 1);
  ok &= Check<float>(rng, g, tp, 1e-4, "float big  ");
  std::printf(ok ? "ALL OK\n" : "FAILED\n");
  return ok ? 0 : 1;
}
