// PWCCA from second moments (core/MATH.md, "PWCCA") against the numpy oracle
// of data/make_measures.py, and what it is and is not invariant to.
#include "cka/core/measures/pwcca.h"

#include <vector>

#include "gtest/gtest.h"
#include "measures/measure_cases.h"

namespace cka::core::testing {
namespace {

double Value(const PwccaSimilarity& s) { return s.value; }

TEST(PwccaTest, EqualsNumpyOnFullRankRankDeficientAndDegenerateCases) {
  for (const MeasureCase& c : MeasureCases()) {
    ExpectMatchesCase(Pwcca(c.Moments()), c, "pwcca", "PWCCA", &Value);
  }
}

TEST(PwccaTest, WeightsComeFromTheSideWithFewerKeptDimensions) {
  const absl::StatusOr<PwccaSimilarity> narrow_x =
      Pwcca(CaseNamed("narrow_x_wide_y").Moments());
  ASSERT_TRUE(narrow_x.ok()) << narrow_x.status();
  EXPECT_TRUE(narrow_x->weights_from_x);
  EXPECT_EQ(narrow_x->alpha.size(), 3u);
  const absl::StatusOr<PwccaSimilarity> swapped =
      Pwcca(SwapSides(CaseNamed("narrow_x_wide_y").Moments()));
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_FALSE(swapped->weights_from_x);
  EXPECT_LE(RelativeDifference(swapped->value, narrow_x->value), kInvariantRel);
}

TEST(PwccaTest, InvariantToScalingSignFlipsAndPermutationsNotToRotations) {
  const MeasureCase& c = CaseNamed("full_rank");
  const double base = Pwcca(c.Moments())->value;
  // Reverse the columns and flip the sign of every other one.
  std::vector<double> p(c.dx * c.dx, 0.0);
  for (int64_t i = 0; i < c.dx; ++i)
    p[i * c.dx + (c.dx - 1 - i)] = i % 2 ? -1.0 : 1.0;
  const std::vector<double> permuted =
      Scaled(TimesMatrix(c.x, c.n, c.dx, p), Transforms().scale);
  EXPECT_LE(
      RelativeDifference(Pwcca(FullRankMomentsWithX(permuted))->value, base),
      kInvariantRel);
  const std::vector<double> rotated =
      TimesMatrix(c.x, c.n, c.dx, Transforms().q);
  EXPECT_GT(
      RelativeDifference(Pwcca(FullRankMomentsWithX(rotated))->value, base),
      kChangedRel);
}

}  // namespace
}  // namespace cka::core::testing
