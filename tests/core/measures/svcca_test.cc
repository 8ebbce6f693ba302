// SVCCA from second moments (core/MATH.md, "SVCCA") against the numpy oracle
// of data/make_measures.py, and its invariances.
#include "cka/core/measures/svcca.h"

#include "gtest/gtest.h"
#include "measures/measure_cases.h"

namespace cka::core::testing {
namespace {

double Value(const SvccaSimilarity& s) { return s.value; }
double KeptX(const SvccaSimilarity& s) { return s.kept_x; }
double KeptY(const SvccaSimilarity& s) { return s.kept_y; }

TEST(SvccaTest, EqualsNumpyOnFullRankRankDeficientAndDegenerateCases) {
  int truncated = 0;
  for (const MeasureCase& c : MeasureCases()) {
    const absl::StatusOr<SvccaSimilarity> got = Svcca(c.Moments());
    ExpectMatchesCase(got, c, "svcca", "SVCCA", &Value);
    ExpectMatchesCase(got, c, "svcca_kept_x", "SVCCA", &KeptX);
    ExpectMatchesCase(got, c, "svcca_kept_y", "SVCCA", &KeptY);
    if (got.ok() && got->kept_y < c.dy && got->kept_y > 0) ++truncated;
  }
  // The 99 % rule must actually cut directions in some cases.
  EXPECT_GE(truncated, 2);
}

TEST(SvccaTest, InvariantToOrthogonalMapsAndScalingOfX) {
  const double base = Svcca(CaseNamed("full_rank").Moments())->value;
  for (const MappedX& m : OrthogonalAndScaledX()) {
    SCOPED_TRACE(m.name);
    const absl::StatusOr<SvccaSimilarity> got =
        Svcca(FullRankMomentsWithX(m.x));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_LE(RelativeDifference(got->value, base), kInvariantRel);
  }
}

TEST(SvccaTest, SymmetricInItsStreams) {
  const PairMoments m = CaseNamed("wider_than_rows").Moments();
  EXPECT_LE(RelativeDifference(Svcca(m)->value, Svcca(SwapSides(m))->value),
            kInvariantRel);
}

}  // namespace
}  // namespace cka::core::testing
