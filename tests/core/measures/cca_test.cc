// CCA from second moments (core/MATH.md, "CCA") against the numpy oracle of
// data/make_measures.py, and its invariances.
#include "cka/core/measures/cca.h"

#include "gtest/gtest.h"
#include "measures/measure_cases.h"

namespace cka::core::testing {
namespace {

double R2(const CcaSimilarity& s) { return s.r2; }
double MeanRho(const CcaSimilarity& s) { return s.mean_rho; }
double RankX(const CcaSimilarity& s) { return s.rank_x; }
double RankY(const CcaSimilarity& s) { return s.rank_y; }
double ForcedUnit(const CcaSimilarity& s) { return s.forced_unit; }

TEST(CcaTest, EqualsNumpyOnFullRankRankDeficientAndDegenerateCases) {
  for (const MeasureCase& c : MeasureCases()) {
    const absl::StatusOr<CcaSimilarity> got = Cca(c.Moments());
    ExpectMatchesCase(got, c, "cca_r2", "CCA", &R2);
    ExpectMatchesCase(got, c, "cca_mean_rho", "CCA", &MeanRho);
    ExpectMatchesCase(got, c, "cca_rank_x", "CCA", &RankX);
    ExpectMatchesCase(got, c, "cca_rank_y", "CCA", &RankY);
    ExpectMatchesCase(got, c, "cca_forced_unit", "CCA", &ForcedUnit);
  }
}

TEST(CcaTest, WiderThanTheRowsEveryCorrelationIsForcedToOne) {
  const absl::StatusOr<CcaSimilarity> got =
      Cca(CaseNamed("both_wider_than_rows").Moments());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->rank_x, 15);  // N − 1 of 24 columns
  EXPECT_EQ(got->forced_unit, static_cast<int64_t>(got->rho.size()));
  for (double rho : got->rho) EXPECT_NEAR(rho, 1.0, 1e-9);
}

TEST(CcaTest, InvariantToInvertibleMapsOfX) {
  const CcaSimilarity base = *Cca(CaseNamed("full_rank").Moments());
  std::vector<MappedX> mapped = OrthogonalAndScaledX();
  mapped.push_back({"X·A", InvertiblyMappedX()});
  for (const MappedX& m : mapped) {
    SCOPED_TRACE(m.name);
    const absl::StatusOr<CcaSimilarity> got = Cca(FullRankMomentsWithX(m.x));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_LE(RelativeDifference(got->r2, base.r2), kInvariantRel);
    EXPECT_LE(RelativeDifference(got->mean_rho, base.mean_rho), kInvariantRel);
  }
}

TEST(CcaTest, SymmetricInItsStreams) {
  const PairMoments m = CaseNamed("narrow_x_wide_y").Moments();
  const CcaSimilarity xy = *Cca(m);
  const CcaSimilarity yx = *Cca(SwapSides(m));
  EXPECT_LE(RelativeDifference(xy.r2, yx.r2), kInvariantRel);
  EXPECT_LE(RelativeDifference(xy.mean_rho, yx.mean_rho), kInvariantRel);
  EXPECT_EQ(xy.rank_x, yx.rank_y);
}

}  // namespace
}  // namespace cka::core::testing
