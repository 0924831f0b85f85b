// A minimal test runner for the TF-free C++ code (no test framework can be downloaded here).
//   KSEG_TEST(Name) { KSEG_EXPECT(cond); KSEG_EXPECT_NEAR(a, b, tol); }
//   int main() { return kseg::testing::RunAll(); }
#ifndef KSEG_OPS_CC_TESTING_MINI_TEST_H_
#define KSEG_OPS_CC_TESTING_MINI_TEST_H_

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace kseg {
namespace testing {

struct TestCase {
  const char* name;
  std::function<void()> body;
};

inline std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& Failures() {
  static int failures = 0;
  return failures;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> body) {
    Registry().push_back({name, std::move(body)});
  }
};

inline int RunAll() {
  int failed_tests = 0;
  for (const TestCase& t : Registry()) {
    const int before = Failures();
    t.body();
    const bool ok = Failures() == before;
    std::printf("[%s] %s\n", ok ? "  OK  " : "FAILED", t.name);
    if (!ok) ++failed_tests;
  }
  std::printf("%zu tests, %d failed\n", Registry().size(), failed_tests);
  return failed_tests == 0 ? 0 : 1;
}

}  // namespace testing
}  // namespace kseg

#define KSEG_TEST(name)                                             \
  static void name();                                               \
  static ::kseg::testing::Registrar name##_registrar(#name, &name); \
  static void name()

#define KSEG_EXPECT(cond)                                               \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::printf("  %s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++::kseg::testing::Failures();                                    \
    }                                                                   \
  } while (0)

#define KSEG_EXPECT_NEAR(a, b, tol)                                                            \
  do {                                                                                         \
    const double kseg_a = (a), kseg_b = (b);                                                   \
    if (!(std::fabs(kseg_a - kseg_b) <= (tol))) {                                              \
      std::printf("  %s:%d: |%s - %s| = |%g - %g| > %g\n", __FILE__, __LINE__, #a, #b, kseg_a, \
                  kseg_b, static_cast<double>(tol));                                           \
      ++::kseg::testing::Failures();                                                           \
    }                                                                                          \
  } while (0)

#endif  // KSEG_OPS_CC_TESTING_MINI_TEST_H_
