#include <gtest/gtest.h>

#include <cmath>

#include "ckactl/matrix_format.h"
#include "ckactl/measure_spec.h"

namespace cka::ckactl {
namespace {

TEST(MeasureSpecTest, ParsesKernelEstimatorAndThreshold) {
  absl::StatusOr<v1::Measure> m = ParseMeasureSpec("rbf05:rbf:biased:0.5");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->name(), "rbf05");
  EXPECT_EQ(m->kernel(), v1::RBF);
  EXPECT_EQ(m->estimator(), v1::BIASED);
  EXPECT_EQ(m->rbf_threshold(), 0.5);
  EXPECT_EQ(MeasureSpec(*m), "rbf05:rbf:biased:0.5");

  m = ParseMeasureSpec("lin:linear");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->estimator(), v1::UNBIASED);
  EXPECT_EQ(ParseMeasureSpec("ex:linear:exact_debiased")->estimator(),
            v1::EXACT_DEBIASED);
}

TEST(MeasureSpecTest, RejectsBadSpecsNamingThePart) {
  for (const char* spec :
       {"lin", "lin:cosine:biased", "lin:linear:sloppy", "r:rbf:biased",
        "r:rbf:biased:-1", ":linear:biased"}) {
    absl::StatusOr<v1::Measure> m = ParseMeasureSpec(spec);
    ASSERT_FALSE(m.ok()) << spec;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(spec), std::string::npos) << m.status();
  }
}

v1::SimilarityMatrix TwoByTwo() {
  v1::SimilarityMatrix m;
  m.set_session_id("s");
  m.set_measure("linear");
  m.add_rows("a/conv1");
  m.add_rows("b/x");
  m.add_cols("a/conv1");
  m.add_cols("b/x");
  for (double v : {1.0, 0.25, 0.25, std::nan("")}) m.add_values(v);
  for (int64_t b : {3, 2, 2, 0}) m.add_batches(b);
  return m;
}

TEST(MatrixFormatTest, TableAlignsColumnsWithNamesAndDashForNoValue) {
  EXPECT_EQ(FormatTable(TwoByTwo(), 3),
            "         a/conv1    b/x\n"
            "a/conv1    1.000  0.250\n"
            "b/x        0.250      -\n");
}

TEST(MatrixFormatTest, CsvAndJsonCarryEveryEntry) {
  EXPECT_EQ(FormatCsv(TwoByTwo(), 2),
            "row,a/conv1,b/x\na/conv1,1.00,0.25\nb/x,0.25,nan\n");
  const nlohmann::json j = MatrixJson(TwoByTwo());
  EXPECT_EQ(j["values"][0][1].get<double>(), 0.25);
  EXPECT_TRUE(j["values"][1][1].is_null());
  EXPECT_EQ(j["batches"][0][0].get<int64_t>(), 3);
  EXPECT_EQ(j["rows"][1].get<std::string>(), "b/x");
}

}  // namespace
}  // namespace cka::ckactl
