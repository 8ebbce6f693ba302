// The cases of data/measures.json (written by data/make_measures.py, a float64
// numpy oracle on the raw activations) and helpers shared by the tests of the
// comparison family (core/MATH.md, "Comparison family from second moments").
//
// Layout: activations are n × d row-major (element (i, j) at [i * d + j]);
// transforms are d × d row-major and act on the right (X·Q).
#ifndef CKA_TESTS_CORE_MEASURES_MEASURE_CASES_H_
#define CKA_TESTS_CORE_MEASURES_MEASURE_CASES_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cka/core/measures/pair_moments.h"
#include "gtest/gtest.h"

namespace cka::core::testing {

struct MeasureCase {
  std::string name;
  int64_t n = 0;
  int64_t dx = 0;
  int64_t dy = 0;
  std::vector<double> x;  // n × dx
  std::vector<double> y;  // n × dy
  // By quantity name (cca_r2, svcca, regression_xy, ...); NaN where the
  // measure is undefined, and then errors[name] is its status code's name.
  std::map<std::string, double> expected;
  std::map<std::string, std::string> errors;

  PairMoments Moments() const;
};

// Transforms of the X of case "full_rank" (dx × dx): Q orthogonal, A
// invertible (condition number < 50), and a positive scale.
struct CaseTransforms {
  std::vector<double> q;
  std::vector<double> a;
  double scale = 1;
};

// Returns every case of data/measures.json, in file order; the case `name`;
// the transforms (all loaded once, alive for the whole test binary).
const std::vector<MeasureCase>& MeasureCases();
const MeasureCase& CaseNamed(const std::string& name);
const CaseTransforms& Transforms();

// Returns the float64 running sums of X (n × dx) and Y (n × dy) over their n
// rows, both triangles of sum_xx and sum_yy filled.
PairMoments MomentsOf(const std::vector<double>& x, int64_t dx,
                      const std::vector<double>& y, int64_t dy, int64_t n);

// Returns X·M for X (n × d) and M (d × d).
std::vector<double> TimesMatrix(const std::vector<double>& x, int64_t n,
                                int64_t d, const std::vector<double>& m);
// Returns c·X.
std::vector<double> Scaled(const std::vector<double>& x, double c);

// The X of case "full_rank" mapped for the invariance tests, and the moments
// of a mapped X with that case's Y.
struct MappedX {
  std::string name;
  std::vector<double> x;
};
std::vector<MappedX> OrthogonalAndScaledX();  // X·Q, c·X, c·X·Q
std::vector<double> InvertiblyMappedX();      // X·A
PairMoments FullRankMomentsWithX(const std::vector<double>& x);

// Expects `got` to be the oracle's value of `quantity` in `c`, or, where the
// oracle has none, a status with its code whose message names `measure`.
// Returns true when a value was compared.
template <typename T>
bool ExpectMatchesCase(const absl::StatusOr<T>& got, const MeasureCase& c,
                       const std::string& quantity, const std::string& measure,
                       double (*value_of)(const T&));

// Relative difference |a − b| / max(|a|, |b|, tiny).
double RelativeDifference(double a, double b);

// Float64 moments of well-conditioned data against SVDs of the data: the two
// differ by rounding of about cond(C)·1e-16 with cond(C) < 1e4 here; 1e-9
// leaves room and still catches any wrong term or wrong rank.
inline constexpr double kOracleRel = 1e-9;

// A map a measure is invariant to changes it by rounding only: the
// transforms have condition number < 50, so the moments' rounding grows to
// about 2500·1e-16.
inline constexpr double kInvariantRel = 1e-9;
// A map a measure is not invariant to changes it, on these data, by far more.
inline constexpr double kChangedRel = 1e-4;

template <typename T>
bool ExpectMatchesCase(const absl::StatusOr<T>& got, const MeasureCase& c,
                       const std::string& quantity, const std::string& measure,
                       double (*value_of)(const T&)) {
  SCOPED_TRACE(c.name + " " + quantity);
  const auto error = c.errors.find(quantity);
  if (error != c.errors.end()) {
    EXPECT_EQ(error->second, "FAILED_PRECONDITION");
    EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition)
        << got.status();
    EXPECT_NE(got.status().message().find(measure), std::string::npos)
        << got.status();
    EXPECT_NE(got.status().message().find("no variance"), std::string::npos)
        << got.status();
    return false;
  }
  if (!got.ok()) {
    ADD_FAILURE() << got.status();
    return false;
  }
  const double want = c.expected.at(quantity);
  EXPECT_LE(RelativeDifference(value_of(*got), want), kOracleRel)
      << "got " << value_of(*got) << ", numpy " << want;
  return true;
}

}  // namespace cka::core::testing

#endif  // CKA_TESTS_CORE_MEASURES_MEASURE_CASES_H_
