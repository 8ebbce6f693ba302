// What every measure of the comparison family shares (core/MATH.md,
// "Comparison family from second moments"): malformed moments are
// InvalidArgument naming the field and value, the rank rule's cancellation
// floor, SwapSides and the scratch estimate.
#include "cka/core/measures/pair_moments.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cka/core/measures/cca.h"
#include "cka/core/measures/linear_regression.h"
#include "cka/core/measures/procrustes.h"
#include "cka/core/measures/pwcca.h"
#include "cka/core/measures/svcca.h"
#include "gtest/gtest.h"
#include "measures/measure_cases.h"

namespace cka::core::testing {
namespace {

struct NamedMeasure {
  std::string name;
  std::function<absl::Status(const PairMoments&)> run;
};

std::vector<NamedMeasure> AllMeasures() {
  return {
      {"CCA", [](const PairMoments& m) { return Cca(m).status(); }},
      {"SVCCA", [](const PairMoments& m) { return Svcca(m).status(); }},
      {"PWCCA", [](const PairMoments& m) { return Pwcca(m).status(); }},
      {"R²(X → Y)",
       [](const PairMoments& m) {
         return LinearRegressionR2(m, RegressionDirection::kXPredictsY)
             .status();
       }},
      {"R²(Y → X)",
       [](const PairMoments& m) {
         return LinearRegressionR2(m, RegressionDirection::kYPredictsX)
             .status();
       }},
      {"Procrustes",
       [](const PairMoments& m) { return ProcrustesSimilarity(m).status(); }},
  };
}

struct Malformed {
  std::string what;
  std::function<void(PairMoments&)> spoil;
  std::string message;  // a part of the expected message
};

TEST(PairMomentsTest, MalformedMomentsAreInvalidArgumentNamingFieldAndValue) {
  const std::vector<Malformed> cases = {
      {"no rows", [](PairMoments& m) { m.rows = 0; }, "rows = 0"},
      {"negative rows", [](PairMoments& m) { m.rows = -3; }, "rows = -3"},
      {"zero width", [](PairMoments& m) { m.dx = 0; }, "dx = 0"},
      {"short sum_y", [](PairMoments& m) { m.sum_y.pop_back(); },
       "sum_y has 6 values"},
      {"short sum_xy", [](PairMoments& m) { m.sum_xy.resize(3); },
       "sum_xy has 3 values, expected dx·dy = 5·7"},
      {"wrong dy", [](PairMoments& m) { m.dy = 8; }, "sum_y has 7 values"},
      {"NaN in sum_xx",
       [](PairMoments& m) {
         m.sum_xx[7] = std::numeric_limits<double>::quiet_NaN();
       },
       "sum_xx[7] = nan"},
      {"infinity in sum_x",
       [](PairMoments& m) {
         m.sum_x[2] = std::numeric_limits<double>::infinity();
       },
       "sum_x[2] = inf"},
      {"sums that overflow when centred",
       [](PairMoments& m) {
         m.sum_x[0] = 1e300;
         m.sum_xx[0] = 1e300;
       },
       "C_xx overflows float64"},
      {"huge width", [](PairMoments& m) { m.dx = int64_t{1} << 40; },
       "sum_x has 5 values"},
  };
  const PairMoments good = CaseNamed("full_rank").Moments();
  for (const NamedMeasure& measure : AllMeasures()) {
    ASSERT_TRUE(measure.run(good).ok()) << measure.name;
    for (const Malformed& c : cases) {
      SCOPED_TRACE(measure.name + ": " + c.what);
      PairMoments m = good;
      c.spoil(m);
      const absl::Status s = measure.run(m);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_NE(s.message().find(c.message), std::string::npos) << s;
      EXPECT_NE(s.message().find(measure.name), std::string::npos) << s;
    }
  }
}

TEST(PairMomentsTest, OneRowHasNoVariance) {
  const MeasureCase& c = CaseNamed("full_rank");
  const PairMoments m = MomentsOf(c.x, c.dx, c.y, c.dy, 1);
  for (const NamedMeasure& measure : AllMeasures()) {
    if (measure.name == "R²(X → Y)" || measure.name == "R²(Y → X)") continue;
    SCOPED_TRACE(measure.name);
    EXPECT_EQ(measure.run(m).code(), absl::StatusCode::kFailedPrecondition);
  }
}

// A column constant at 98765.4321 over 60 rows leaves rounding of about 1e-3
// in its centred variance from raw sums, far above kRankTolerance·λ_max ≈
// 1e-8: only the cancellation floor drops it. Without the floor CCA would
// whiten that rounding and find a spurious fifth canonical correlation.
TEST(PairMomentsTest, CancellationFloorDropsAConstantColumnWithALargeValue) {
  const MeasureCase& c = CaseNamed("constant_column");
  const absl::StatusOr<CcaSimilarity> cca = Cca(c.Moments());
  ASSERT_TRUE(cca.ok()) << cca.status();
  EXPECT_EQ(cca->rank_x, c.dx - 1);
}

TEST(PairMomentsTest, SwapSidesExchangesTheStreams) {
  const MeasureCase& c = CaseNamed("narrow_x_wide_y");
  const PairMoments swapped = SwapSides(c.Moments());
  const PairMoments direct = MomentsOf(c.y, c.dy, c.x, c.dx, c.n);
  EXPECT_EQ(swapped.dx, direct.dx);
  EXPECT_EQ(swapped.dy, direct.dy);
  EXPECT_EQ(swapped.sum_x, direct.sum_x);
  EXPECT_EQ(swapped.sum_xx, direct.sum_xx);
  EXPECT_EQ(swapped.sum_xy, direct.sum_xy);
}

TEST(PairMomentsTest, SwapSidesOfWidthsWhoseProductWrapsIsRefusedNotACrash) {
  PairMoments m = CaseNamed("full_rank").Moments();
  m.dx = int64_t{1} << 40;
  m.dy = int64_t{1} << 24;  // dx·dy = 2⁶⁴ wraps to 0 in uint64
  m.sum_xy.clear();
  const absl::StatusOr<CcaSimilarity> cca = Cca(SwapSides(m));
  EXPECT_EQ(cca.status().code(), absl::StatusCode::kInvalidArgument)
      << cca.status();
}

TEST(PairMomentsTest,
     ScratchEstimateCoversTheMomentsGrowsQuadraticallySaturates) {
  // At least the three centred moments themselves.
  EXPECT_GE(MomentMeasureBytes(64, 32), 8 * (64 * 64 + 32 * 32 + 64 * 32));
  EXPECT_GT(MomentMeasureBytes(2048, 2048),
            3.9 * MomentMeasureBytes(1024, 1024));
  EXPECT_EQ(MomentMeasureBytes(int64_t{1} << 40, 3),
            std::numeric_limits<int64_t>::max());
}

}  // namespace
}  // namespace cka::core::testing
