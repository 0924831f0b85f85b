// FFT cross-correlation of NHWC images with [kh, kw, cin, cout] kernels, free of TensorFlow.
//
// out[b, y, x, o] = sum_{i, j, c} in[b, y + i - pad_top, x + j - pad_left, c] * k[i, j, c, o]
//
// Method: the output is cut into tiles; each tile's input window (tile + kernel - 1) is zero-padded
// to an FFT size nh x nw (products of 2, 3, 5) and transformed with a real-to-complex 2D FFT in
// which all channels of a pixel are transformed together (the channels are the innermost, SIMD,
// dimension). Each kernel slice is transformed once per call. Per frequency the channel mixing is a
// complex [tiles, cin] x [cin, cout] matrix product. Tiles do not interact (each output tile reads
// its own overlapping input window: overlap-save), so memory stays bounded by the tile group size
// and tiles run in parallel without locks.
//
// This header holds the ISA-independent parts (geometry, tile planning, FFT plans); the numerical
// kernels live in fft_conv_impl.inc, which is included here once in namespace kseg::fft::generic
// and may be included again by a translation unit under other `#pragma GCC target` settings.
#ifndef KSEG_OPS_CC_FFT_FFT_CONV_CORE_H_
#define KSEG_OPS_CC_FFT_FFT_CONV_CORE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kseg_ops/cc/common/parallel_for.h"
#include "kseg_ops/cc/common/run_control.h"

namespace kseg {
namespace fft {

// Work is spread with kseg::ParallelFor (common/parallel_for.h); the cost per unit is a rough
// count of floating point operations.
using ::kseg::ParallelFor;
using ::kseg::SerialFor;

// Shapes of one correlation (see the formula at the top of this file).
struct Geometry {
  int64_t batch = 1, in_h = 1, in_w = 1, cin = 1;
  int64_t kh = 1, kw = 1, cout = 1;
  int64_t out_h = 1, out_w = 1;
  int64_t pad_top = 0, pad_left = 0;
};

// tf.nn.conv2d geometry for stride 1, dilation 1, SAME or VALID padding.
inline Geometry ConvGeometry(int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t kh,
                             int64_t kw, int64_t cout, bool padding_same) {
  Geometry g;
  g.batch = batch;
  g.in_h = h;
  g.in_w = w;
  g.cin = cin;
  g.kh = kh;
  g.kw = kw;
  g.cout = cout;
  if (padding_same) {
    g.out_h = h;
    g.out_w = w;
    g.pad_top = (kh - 1) / 2;
    g.pad_left = (kw - 1) / 2;
  } else {
    g.out_h = h - kh + 1;
    g.out_w = w - kw + 1;
  }
  return g;
}

// The gradient with respect to the input is a correlation of the output gradient with the kernel
// flipped in space and transposed in channels, padded so that it lands on the input grid.
inline Geometry InputGradientGeometry(const Geometry& g) {
  Geometry t;
  t.batch = g.batch;
  t.in_h = g.out_h;
  t.in_w = g.out_w;
  t.cin = g.cout;
  t.kh = g.kh;
  t.kw = g.kw;
  t.cout = g.cin;
  t.out_h = g.in_h;
  t.out_w = g.in_w;
  t.pad_top = g.kh - 1 - g.pad_top;
  t.pad_left = g.kw - 1 - g.pad_left;
  return t;
}

// Empty string when the geometry is usable, else what is wrong with it.
inline std::string ValidateGeometry(const Geometry& g) {
  auto text = [](const char* name, int64_t v) {
    return std::string(name) + " = " + std::to_string(v);
  };
  if (g.batch < 0) return text("batch", g.batch) + " must be >= 0";
  if (g.in_h < 1 || g.in_w < 1)
    return text("input height", g.in_h) + ", " + text("width", g.in_w) + " must be >= 1";
  if (g.cin < 1 || g.cout < 1)
    return text("input channels", g.cin) + ", " + text("output channels", g.cout) + " must be >= 1";
  if (g.kh < 1 || g.kw < 1)
    return text("kernel height", g.kh) + ", " + text("width", g.kw) + " must be >= 1";
  if (g.out_h < 1 || g.out_w < 1)
    return text("output height", g.out_h) + ", " + text("width", g.out_w) + " must be >= 1";
  return "";
}

// True when n > 0 factors into 2, 3 and 5 only.
inline bool IsFastSize(int64_t n) {
  if (n < 1) return false;
  for (int64_t p : {2, 3, 5})
    while (n % p == 0) n /= p;
  return n == 1;
}

inline int64_t NextFastSize(int64_t n, bool even) {
  int64_t m = std::max<int64_t>(n, even ? 2 : 1);
  while (!IsFastSize(m) || (even && m % 2 != 0)) ++m;
  return m;
}

// How the output is tiled: FFT size nh x nw, each tile covers tile_h x tile_w outputs.
struct TilePlan {
  int64_t nh = 1, nw = 2;
  int64_t tile_h = 1, tile_w = 1;
  int64_t tiles_y = 1, tiles_x = 1;
  int64_t group = 1;  // tiles (over all images) transformed together
  double cost = 0;    // model cost, in FFT butterfly-lane units
  int64_t frequencies() const { return nh * (nw / 2 + 1); }
  int64_t tiles() const { return tiles_y * tiles_x; }
};

// Relative cost of the FFT path for a given FFT size (used to pick the tiling; the absolute scale
// is calibrated in Python against measured times).
inline double TileCost(const Geometry& g, int64_t nh, int64_t nw, int64_t* tiles_y,
                       int64_t* tiles_x) {
  const int64_t th = nh - g.kh + 1, tw = nw - g.kw + 1;
  *tiles_y = (g.out_h + th - 1) / th;
  *tiles_x = (g.out_w + tw - 1) / tw;
  const double tiles = static_cast<double>(*tiles_y) * static_cast<double>(*tiles_x);
  const double freqs = static_cast<double>(nh) * static_cast<double>(nw / 2 + 1);
  const double logs = std::log2(static_cast<double>(nh)) + std::log2(static_cast<double>(nw));
  const double b = static_cast<double>(std::max<int64_t>(g.batch, 1));
  // Weights measured on AVX-512 (per lane, frequency and log2 size; one complex multiply-add
  // of the channel mixing = 1): image and output tiles 1.7, kernel slices 2.2 (their many
  // lanes go through the column pass of every frequency row).
  const double fft = (1.7 * b * tiles * static_cast<double>(g.cin + g.cout) +
                      2.2 * static_cast<double>(g.cin * g.cout)) *
                     freqs * logs;
  const double mix = b * tiles * freqs * static_cast<double>(g.cin * g.cout);
  return fft + mix;
}

// Picks the FFT size minimising TileCost among sizes whose kernel spectrum fits
// kernel_budget_bytes, and the tile group size so that one group's spectra fit group_budget_bytes.
inline TilePlan ChooseTilePlan(const Geometry& g, int64_t bytes_per_value, int64_t num_threads,
                               int64_t kernel_budget_bytes = int64_t{512} << 20,
                               int64_t group_budget_bytes = int64_t{32} << 20) {
  const int64_t max_h = NextFastSize(g.out_h + g.kh - 1, false);
  const int64_t max_w = NextFastSize(g.out_w + g.kw - 1, true);
  TilePlan best;
  bool have = false, best_fits = false;
  double best_bytes = 0;
  for (int64_t nh = NextFastSize(g.kh, false); nh <= max_h; nh = NextFastSize(nh + 1, false)) {
    for (int64_t nw = NextFastSize(g.kw, true); nw <= max_w; nw = NextFastSize(nw + 1, true)) {
      int64_t ty, tx;
      const double cost = TileCost(g, nh, nw, &ty, &tx);
      const double kernel_bytes = 2.0 * static_cast<double>(bytes_per_value) *
                                  static_cast<double>(nh * (nw / 2 + 1)) *
                                  static_cast<double>(g.cin * g.cout);
      const bool fits = kernel_bytes <= static_cast<double>(kernel_budget_bytes);
      // Plans whose kernel spectrum fits the budget first, the cheapest of them; else the smallest.
      bool better = !have;
      if (have && fits != best_fits) better = fits;
      if (have && fits == best_fits) better = fits ? cost < best.cost : kernel_bytes < best_bytes;
      if (better) {
        best.nh = nh;
        best.nw = nw;
        best.tile_h = nh - g.kh + 1;
        best.tile_w = nw - g.kw + 1;
        best.tiles_y = ty;
        best.tiles_x = tx;
        best.cost = cost;
        best_fits = fits;
        best_bytes = kernel_bytes;
        have = true;
      }
    }
  }
  const int64_t items = std::max<int64_t>(1, g.batch * best.tiles());
  const int64_t per_item = 2 * bytes_per_value * best.frequencies() * (g.cin + g.cout);
  int64_t group = std::max<int64_t>(1, group_budget_bytes / std::max<int64_t>(per_item, 1));
  group = std::max<int64_t>(group, 2 * std::max<int64_t>(num_threads, 1));
  best.group = std::min(group, items);
  return best;
}

// Host memory of the three correlations, counted before they allocate (t = bytes per value,
// `threads` = shards running at once, F = nh (nw / 2 + 1) frequencies of the plan):
//   W(lanes, tmp) = 2 nh (nw / 2 + 1) lanes + 4 (nw / 2) lanes + 2 tmp   (one thread's Workspace)
//   Correlate:      2 F cin cout (kernel spectrum) + threads W(cout, F cout) (its transform)
//                   + group 2 F (cin + cout) (tile spectra) + threads (W(cin) + W(cout))
//   BackpropInput:  kh kw cin cout (flipped kernel) + Correlate of InputGradientGeometry
//   BackpropFilter: 2 F cin cout (cross spectra) + group 2 F (cin + cout)
//                   + threads (W(max(cin, cout)) + W(cout, F cout))
// all times t. Counted in double and capped at int64's maximum so that huge shapes compare.
inline double WorkspaceValues(const TilePlan& tp, int64_t lanes, double tmp = 0) {
  const double half = static_cast<double>(tp.nw / 2);
  return (2.0 * tp.nh * (half + 1) + 4.0 * half) * lanes + 2.0 * tmp;
}

inline int64_t SaturatedBytes(double values, int64_t t) {
  const double bytes = values * static_cast<double>(t);
  return bytes >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(bytes);
}

inline int64_t CorrelateBytes(const Geometry& g, const TilePlan& tp, int64_t t, int64_t threads) {
  const double freqs = static_cast<double>(tp.frequencies());
  const double cin = static_cast<double>(g.cin), cout = static_cast<double>(g.cout);
  const double items = std::max<double>(1.0, static_cast<double>(g.batch) * tp.tiles());
  const double group = std::min<double>(static_cast<double>(std::max<int64_t>(tp.group, 1)), items);
  const double th = static_cast<double>(std::max<int64_t>(threads, 1));
  return SaturatedBytes(2 * freqs * cin * cout + th * WorkspaceValues(tp, g.cout, freqs * cout) +
                            group * 2 * freqs * (cin + cout) +
                            th * (WorkspaceValues(tp, g.cin) + WorkspaceValues(tp, g.cout)),
                        t);
}

inline int64_t BackpropFilterBytes(const Geometry& g, const TilePlan& tp, int64_t t,
                                   int64_t threads) {
  const double freqs = static_cast<double>(tp.frequencies());
  const double cin = static_cast<double>(g.cin), cout = static_cast<double>(g.cout);
  const double items = std::max<double>(1.0, static_cast<double>(g.batch) * tp.tiles());
  const double group = std::min<double>(static_cast<double>(std::max<int64_t>(tp.group, 1)), items);
  const double th = static_cast<double>(std::max<int64_t>(threads, 1));
  return SaturatedBytes(2 * freqs * cin * cout + group * 2 * freqs * (cin + cout) +
                            th * (WorkspaceValues(tp, std::max(g.cin, g.cout)) +
                                  WorkspaceValues(tp, g.cout, freqs * cout)),
                        t);
}

// Twiddle factors and stage list of a complex FFT of length n (n a product of 2, 3, 5).
template <typename T>
struct ComplexPlan {
  struct Stage {
    int radix;
    int64_t m;       // n_stage / radix
    int64_t s;       // stride (product of the previous radices)
    int64_t offset;  // into tw_re / tw_im: (radix - 1) * m values
  };
  int64_t n = 1;
  std::vector<Stage> stages;
  std::vector<T> tw_re, tw_im;  // forward twiddles exp(-2 pi i p k / n_stage)

  explicit ComplexPlan(int64_t length = 1) : n(length) {
    int64_t rest = length, s = 1;
    while (rest > 1) {
      int radix = rest % 4 == 0 ? 4 : rest % 2 == 0 ? 2 : rest % 3 == 0 ? 3 : rest % 5 == 0 ? 5 : 0;
      if (radix == 0) {  // callers only ask for fast sizes; keep the plan empty rather than wrong
        stages.clear();
        n = -1;
        return;
      }
      const int64_t m = rest / radix;
      Stage st{radix, m, s, static_cast<int64_t>(tw_re.size())};
      for (int64_t p = 0; p < m; ++p) {
        for (int k = 1; k < radix; ++k) {
          const long double angle = -2.0L * 3.14159265358979323846264338327950288L *
                                    static_cast<long double>(p * k) /
                                    static_cast<long double>(rest);
          tw_re.push_back(static_cast<T>(std::cos(angle)));
          tw_im.push_back(static_cast<T>(std::sin(angle)));
        }
      }
      stages.push_back(st);
      rest = m;
      s *= radix;
    }
  }
  bool valid() const { return n >= 1; }
};

// Real FFT of even length nw through a complex FFT of length nw / 2 plus a split step.
template <typename T>
struct RealPlan {
  int64_t nw = 2, half = 1;
  ComplexPlan<T> complex;
  std::vector<T> w_re, w_im;  // exp(-2 pi i k / nw), k = 0..half

  explicit RealPlan(int64_t length = 2) : nw(length), half(length / 2), complex(length / 2) {
    for (int64_t k = 0; k <= half; ++k) {
      const long double angle = -2.0L * 3.14159265358979323846264338327950288L *
                                static_cast<long double>(k) / static_cast<long double>(nw);
      w_re.push_back(static_cast<T>(std::cos(angle)));
      w_im.push_back(static_cast<T>(std::sin(angle)));
    }
  }
  bool valid() const { return nw >= 2 && nw % 2 == 0 && complex.valid(); }
};

}  // namespace fft
}  // namespace kseg

// The baseline build: SSE-width vectors (16 bytes), fine on every x86-64 and elsewhere.
#ifndef KSEG_FFT_ISA
#define KSEG_FFT_ISA generic
#define KSEG_FFT_VECTOR_BYTES 16
#endif
#include "fft_conv_impl.inc"

#endif  // KSEG_OPS_CC_FFT_FFT_CONV_CORE_H_
