// core/MATH.md, "Properties": every measure on data/properties.json, whose
// streams are x, x·Q (Q orthogonal), 3.7·x, x·A (A invertible, strongly
// anisotropic) and y, over two batches.
#include <cmath>
#include <string>

#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// x·Q and 3.7·x are computed in float64 by numpy, so they differ from exact
// transforms of x by ~1e-16 relative; CKA moves by about as much. 1e-10 is far
// below any real violation (the script checks that x·A moves CKA by more than
// 1e-2).
constexpr double kInvarianceTolerance = 1e-10;
constexpr double kFloat64Tolerance = 1e-10;  // as in golden_test.cc
constexpr double kGeneralMapMinimumChange = 1e-2;

enum Stream { kX = 0, kXQ = 1, kCX = 2, kXA = 3, kY = 4 };

// The matrix of every measure over the five streams (one process per property
// keeps the suite fast under sanitizers; SCOPED_TRACE names the measure of a
// failure).
class PropertiesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Scenario& s = LoadScenario("properties.json");
    std::unique_ptr<Session> session = SessionWithAll(s);
    ASSERT_NE(session, nullptr);
    for (const Measure& m : s.measures) {
      matrices_.push_back(QueryOrDie(*session, FullQuery(s, m.name)));
      ASSERT_EQ(matrices_.back().values.size(), 25u);
    }
  }
  static double At(const SimilarityMatrix& m, int s, int t) {
    return m.values[s * 5 + t];
  }

  std::vector<SimilarityMatrix> matrices_;
};

TEST_F(PropertiesTest, SelfSimilarityIsOne) {
  for (const SimilarityMatrix& m : matrices_) {
    SCOPED_TRACE(m.measure);
    for (int s = 0; s < 5; ++s)
      EXPECT_NEAR(At(m, s, s), 1.0, kFloat64Tolerance) << s;
  }
}

TEST_F(PropertiesTest, MatrixIsSymmetric) {
  for (const SimilarityMatrix& m : matrices_) {
    SCOPED_TRACE(m.measure);
    for (int s = 0; s < 5; ++s) {
      for (int t = 0; t < 5; ++t) {
        EXPECT_NEAR(At(m, s, t), At(m, t, s), kFloat64Tolerance) << s << t;
      }
    }
  }
}

TEST_F(PropertiesTest, InvariantToOrthogonalTransform) {
  for (const SimilarityMatrix& m : matrices_) {
    SCOPED_TRACE(m.measure);
    EXPECT_NEAR(At(m, kXQ, kY), At(m, kX, kY), kInvarianceTolerance);
    EXPECT_NEAR(At(m, kX, kXQ), 1.0, kInvarianceTolerance);
  }
}

TEST_F(PropertiesTest, InvariantToIsotropicScaling) {
  for (const SimilarityMatrix& m : matrices_) {
    SCOPED_TRACE(m.measure);
    EXPECT_NEAR(At(m, kCX, kY), At(m, kX, kY), kInvarianceTolerance);
    EXPECT_NEAR(At(m, kX, kCX), 1.0, kInvarianceTolerance);
  }
}

TEST_F(PropertiesTest, NotInvariantToGeneralInvertibleLinearMap) {
  for (const SimilarityMatrix& m : matrices_) {
    SCOPED_TRACE(m.measure);
    EXPECT_GT(std::abs(At(m, kXA, kY) - At(m, kX, kY)),
              kGeneralMapMinimumChange);
    EXPECT_LT(At(m, kX, kXA), 1.0 - kGeneralMapMinimumChange);
  }
}

TEST_F(PropertiesTest, EveryMeasureMatchesNumpy) {
  const Scenario& s = LoadScenario("properties.json");
  ASSERT_EQ(matrices_.size(),
            6u);  // linear, rbf 0.5 (unbiased, biased), exact, debiased
  for (const SimilarityMatrix& m : matrices_) {
    ExpectMatrixNear(m, s.expected.at(m.measure), kFloat64Tolerance,
                     kFloat64Tolerance, m.measure);
  }
}

// One batch holding all examples (golden.json is a single batch of 100).
class OneBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Scenario& s = LoadScenario("golden.json");
    session_ = SessionWithAll(s);
    ASSERT_NE(session_, nullptr);
  }
  double XY(const std::string& measure) {
    SimilarityQuery q;
    q.measure = measure;
    q.rows = {"x"};
    q.cols = {"y"};
    const SimilarityMatrix m = QueryOrDie(*session_, q);
    return m.values.empty() ? NAN : m.values[0];
  }
  std::unique_ptr<Session> session_;
};

TEST_F(OneBatchTest, UnbiasedEstimatorEqualsDebiasedCka) {
  const double debiased =
      LoadJson("golden.json")["numpy"]["debiased_linear_cka"];
  EXPECT_NEAR(XY("linear"), debiased, kFloat64Tolerance);
  EXPECT_NEAR(XY("linear"), XY("exact_debiased"), kFloat64Tolerance);
}

TEST_F(OneBatchTest, BiasedEstimatorEqualsPaperCka) {
  const double paper = LoadJson("golden.json")["numpy"]["linear_cka"];
  EXPECT_NEAR(XY("linear_biased"), paper, kFloat64Tolerance);
  EXPECT_NEAR(XY("linear_biased"), XY("exact"), kFloat64Tolerance);
}

}  // namespace
}  // namespace cka::core::testing
