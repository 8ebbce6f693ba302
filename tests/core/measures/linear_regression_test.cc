// Linear-regression R² from second moments (core/MATH.md, "Linear
// regression") against the numpy oracle of data/make_measures.py (least
// squares on the data), its direction and invariances.
#include "cka/core/measures/linear_regression.h"

#include "gtest/gtest.h"
#include "measures/measure_cases.h"

namespace cka::core::testing {
namespace {

double Value(const double& v) { return v; }

TEST(LinearRegressionTest, EqualsNumpyLeastSquaresInBothDirections) {
  for (const MeasureCase& c : MeasureCases()) {
    const PairMoments m = c.Moments();
    ExpectMatchesCase(LinearRegressionR2(m, RegressionDirection::kXPredictsY),
                      c, "regression_xy", "R²(X → Y)", &Value);
    ExpectMatchesCase(LinearRegressionR2(m, RegressionDirection::kYPredictsX),
                      c, "regression_yx", "R²(Y → X)", &Value);
  }
}

TEST(LinearRegressionTest, APredictorWithoutVarianceExplainsNothing) {
  for (const char* name : {"constant_x", "zero_x"}) {
    SCOPED_TRACE(name);
    const absl::StatusOr<double> r2 = LinearRegressionR2(
        CaseNamed(name).Moments(), RegressionDirection::kXPredictsY);
    ASSERT_TRUE(r2.ok()) << r2.status();
    EXPECT_EQ(*r2, 0.0);
  }
}

TEST(LinearRegressionTest, IsAsymmetricAndTheDirectionSwapsTheSides) {
  const PairMoments m = CaseNamed("full_rank").Moments();
  const double xy = *LinearRegressionR2(m, RegressionDirection::kXPredictsY);
  const double yx = *LinearRegressionR2(m, RegressionDirection::kYPredictsX);
  EXPECT_GT(RelativeDifference(xy, yx), kChangedRel);
  EXPECT_EQ(*LinearRegressionR2(SwapSides(m), RegressionDirection::kXPredictsY),
            yx);
}

TEST(LinearRegressionTest, InvariantToInvertibleMapsOfThePredictorOnly) {
  const PairMoments base_m = CaseNamed("full_rank").Moments();
  const double xy =
      *LinearRegressionR2(base_m, RegressionDirection::kXPredictsY);
  const double yx =
      *LinearRegressionR2(base_m, RegressionDirection::kYPredictsX);
  const PairMoments mapped = FullRankMomentsWithX(InvertiblyMappedX());
  EXPECT_LE(
      RelativeDifference(
          *LinearRegressionR2(mapped, RegressionDirection::kXPredictsY), xy),
      kInvariantRel);
  // X·A as the predicted side: its variance is weighted differently.
  EXPECT_GT(
      RelativeDifference(
          *LinearRegressionR2(mapped, RegressionDirection::kYPredictsX), yx),
      kChangedRel);
  // Orthogonal maps and scaling of the predicted side keep its total variance.
  for (const MappedX& m : OrthogonalAndScaledX()) {
    SCOPED_TRACE(m.name);
    EXPECT_LE(RelativeDifference(
                  *LinearRegressionR2(FullRankMomentsWithX(m.x),
                                      RegressionDirection::kYPredictsX),
                  yx),
              kInvariantRel);
  }
}

}  // namespace
}  // namespace cka::core::testing
