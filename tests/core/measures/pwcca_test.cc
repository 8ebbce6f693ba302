// PWCCA from second moments (core/MATH.md, "PWCCA") against the numpy oracle
// of data/make_measures.py, and what it is and is not invariant to.
#include "cka/core/measures/pwcca.h"

#include <random>
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

// The canonical variates of X, and so PWCCA weighted from X, do not depend on
// Y's basis. Case "coinciding_correlations" has two correlations equal to 1,
// whose variates the SVD may return in any basis of their span: the paper's
// per-direction weights then change with Y's basis, the run's shared weight
// (core/MATH.md, "PWCCA") does not.
TEST(PwccaTest, CoincidingCorrelationsWeighTheirSpanWhateverYsBasis) {
  const MeasureCase& c = CaseNamed("coinciding_correlations");
  const absl::StatusOr<PwccaSimilarity> base = Pwcca(c.Moments());
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_TRUE(base->weights_from_x);
  ASSERT_GE(base->rho.size(), 3u);
  EXPECT_NEAR(base->rho[1], 1.0, 1e-12);  // the two coinciding correlations
  EXPECT_EQ(base->alpha[0], base->alpha[1]);
  const unsigned seed = 20261207;
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  for (int trial = 0; trial < 8; ++trial) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " trial " << trial);
    std::vector<double> a(c.dy * c.dy);
    for (int64_t i = 0; i < c.dy; ++i) {
      for (int64_t j = 0; j < c.dy; ++j)
        a[i * c.dy + j] = normal(rng) + (i == j ? 3.0 : 0.0);
    }
    const absl::StatusOr<PwccaSimilarity> mapped =
        Pwcca(MomentsOf(c.x, c.dx, TimesMatrix(c.y, c.n, c.dy, a), c.dy, c.n));
    ASSERT_TRUE(mapped.ok()) << mapped.status();
    EXPECT_LE(RelativeDifference(mapped->value, base->value), 1e-9);
  }
}

}  // namespace
}  // namespace cka::core::testing
