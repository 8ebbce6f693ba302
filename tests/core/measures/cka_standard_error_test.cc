// The delta-method standard error of a minibatch CKA entry (core/MATH.md,
// "Standard error of a minibatch CKA entry"): against numpy's covariance on the
// per-batch values of data/standard_error.json (data/make_standard_error.py).
// The simulation over independent sessions runs through Session
// (tests/core/standard_error_test.cc).
#include "cka/core/measures/cka_standard_error.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "measures/measure_cases.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// Running sums against numpy.cov: the raw-sum covariance loses about
// log10(mean²/variance) digits, up to 6 in the "large_offset" case; 1e-6
// relative leaves room and still catches a wrong divisor or gradient term.
constexpr double kSumsRel = 1e-6;

std::vector<double> Doubles(const nlohmann::json& j) {
  std::vector<double> v;
  for (const auto& e : j) v.push_back(e.get<double>());
  return v;
}

TEST(CkaStandardErrorTest, EqualsNumpyCovarianceOfThePerBatchValues) {
  for (const auto& c : LoadJson("standard_error.json").at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const std::vector<double> a = Doubles(c.at("a")), u = Doubles(c.at("u")),
                              v = Doubles(c.at("v"));
    CkaBatchSums sums;
    for (size_t b = 0; b < a.size(); ++b) sums.Add(a[b], u[b], v[b]);
    const double cka = CkaOfSums(sums), se = CkaStandardError(sums);
    if (c.at("cka").is_null()) {
      EXPECT_TRUE(std::isnan(cka)) << cka;
    } else {
      EXPECT_LE(RelativeDifference(cka, c.at("cka").get<double>()), 1e-12);
    }
    if (c.at("se").is_null()) {
      EXPECT_TRUE(std::isnan(se)) << se;
    } else if (c.at("se").get<double>() == 0.0) {
      EXPECT_LE(se, 1e-12);  // no spread at all: rounding only
    } else {
      EXPECT_LE(RelativeDifference(se, c.at("se").get<double>()), kSumsRel)
          << "got " << se << ", numpy " << c.at("se").get<double>();
    }
  }
}

TEST(CkaStandardErrorTest, SumsOfDisjointBatchSetsMerge) {
  const auto& c = LoadJson("standard_error.json").at("cases").at(0);
  const std::vector<double> a = Doubles(c.at("a")), u = Doubles(c.at("u")),
                            v = Doubles(c.at("v"));
  CkaBatchSums whole, first, second;
  for (size_t b = 0; b < a.size(); ++b) {
    whole.Add(a[b], u[b], v[b]);
    (b % 3 ? first : second).Add(a[b], u[b], v[b]);
  }
  first.Merge(second);
  EXPECT_EQ(first.batches, whole.batches);
  EXPECT_LE(
      RelativeDifference(CkaStandardError(first), CkaStandardError(whole)),
      1e-12);
}

}  // namespace
}  // namespace cka::core::testing
