// Run-time CPU feature checks for the kernels compiled for wider ISAs than the library's
// baseline (x86-64-v2): one place asks the CPU, every kernel reads the answer from here.
#ifndef KSEG_OPS_CC_COMMON_CPU_FEATURES_H_
#define KSEG_OPS_CC_COMMON_CPU_FEATURES_H_

namespace kseg {
namespace cpu {

struct Features {
  bool avx2 = false;
  bool fma = false;
  bool avx512 = false;  // avx512f, avx512vl and avx512dq
};

inline const Features& GetFeatures() {
  static const Features features = [] {
    Features f;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
#endif
    return f;
  }();
  return features;
}

inline bool HasAvx2() { return GetFeatures().avx2; }
inline bool HasAvx2Fma() { return GetFeatures().avx2 && GetFeatures().fma; }
inline bool HasAvx512() { return HasAvx2Fma() && GetFeatures().avx512; }

}  // namespace cpu
}  // namespace kseg

#endif  // KSEG_OPS_CC_COMMON_CPU_FEATURES_H_
