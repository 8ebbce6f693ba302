// Orthogonal Procrustes similarity from second moments (core/MATH.md,
// "Orthogonal Procrustes") against the numpy oracle of data/make_measures.py
// (the optimal rotation applied to the data), and its invariances.
#include "cka/core/measures/procrustes.h"

#include "gtest/gtest.h"
#include "measures/measure_cases.h"

namespace cka::core::testing {
namespace {

double Value(const double& v) { return v; }

TEST(ProcrustesTest, EqualsNumpyOnFullRankRankDeficientAndDegenerateCases) {
  for (const MeasureCase& c : MeasureCases()) {
    ExpectMatchesCase(ProcrustesSimilarity(c.Moments()), c, "procrustes",
                      "Procrustes", &Value);
  }
}

TEST(ProcrustesTest, InvariantToOrthogonalMapsAndScalingNotToGeneralMaps) {
  const double base = *ProcrustesSimilarity(CaseNamed("full_rank").Moments());
  for (const MappedX& m : OrthogonalAndScaledX()) {
    SCOPED_TRACE(m.name);
    EXPECT_LE(RelativeDifference(
                  *ProcrustesSimilarity(FullRankMomentsWithX(m.x)), base),
              kInvariantRel);
  }
  EXPECT_GT(RelativeDifference(*ProcrustesSimilarity(
                                   FullRankMomentsWithX(InvertiblyMappedX())),
                               base),
            kChangedRel);
}

TEST(ProcrustesTest, AStreamAndItsRotationAreOne) {
  const MeasureCase& c = CaseNamed("full_rank");
  const std::vector<double> rotated =
      Scaled(TimesMatrix(c.x, c.n, c.dx, Transforms().q), Transforms().scale);
  const absl::StatusOr<double> s =
      ProcrustesSimilarity(MomentsOf(c.x, c.dx, rotated, c.dx, c.n));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NEAR(*s, 1.0, 1e-12);
}

TEST(ProcrustesTest, SymmetricInItsStreams) {
  const PairMoments m = CaseNamed("narrow_x_wide_y").Moments();
  EXPECT_LE(RelativeDifference(*ProcrustesSimilarity(m),
                               *ProcrustesSimilarity(SwapSides(m))),
            kInvariantRel);
}

}  // namespace
}  // namespace cka::core::testing
