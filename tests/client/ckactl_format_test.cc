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

TEST(MeasureSpecTest, ParsesTheComparisonFamilyAsNameAndKind) {
  const std::pair<const char*, v1::MeasureKind> kinds[] = {
      {"cca_r2", v1::CCA_R2},
      {"cca_mean_rho", v1::CCA_MEAN_RHO},
      {"svcca", v1::SVCCA},
      {"pwcca", v1::PWCCA},
      {"regression_r2", v1::REGRESSION_R2},
      {"procrustes", v1::PROCRUSTES}};
  for (const auto& [name, kind] : kinds) {
    const std::string spec = std::string("m:") + name;
    absl::StatusOr<v1::Measure> m = ParseMeasureSpec(spec);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->kind(), kind) << spec;
    EXPECT_EQ(m->kernel(), v1::LINEAR) << spec;
    EXPECT_EQ(m->estimator(), v1::EXACT) << spec;
    EXPECT_EQ(MeasureSpec(*m), spec);
  }
  for (const char* spec : {"m:svcca:exact", "m:cca_r2:linear:unbiased"}) {
    absl::StatusOr<v1::Measure> m = ParseMeasureSpec(spec);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_NE(m.status().message().find("takes no kernel"), std::string::npos)
        << m.status();
  }
  EXPECT_NE(ParseMeasureSpec("m:ccca").status().message().find("measure kind"),
            std::string::npos);
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

TEST(MatrixFormatTest, TableAndJsonShowAMomentMeasuresNote) {
  v1::SimilarityMatrix m = TwoByTwo();
  m.set_note("1 of 4 entries have no value (NaN)");
  EXPECT_EQ(FormatTable(m, 3),
            "         a/conv1    b/x\n"
            "a/conv1    1.000  0.250\n"
            "b/x        0.250      -\n"
            "note: 1 of 4 entries have no value (NaN)\n");
  EXPECT_EQ(MatrixJson(m)["note"].get<std::string>(), m.note());
  EXPECT_FALSE(MatrixJson(TwoByTwo()).contains("note"));
}

// TwoByTwo with standard errors: none on the diagonal's first entry (NaN, as
// for an entry of one batch) and none without a value.
v1::SimilarityMatrix TwoByTwoWithErrors() {
  v1::SimilarityMatrix m = TwoByTwo();
  for (double se : {std::nan(""), 0.0125, 0.0125, std::nan("")})
    m.add_standard_errors(se);
  return m;
}

TEST(MatrixFormatTest, TableWithErrorsAlignsValuePlusMinusError) {
  // "±" is two bytes and one column: the columns stay aligned on screen.
  EXPECT_EQ(FormatTable(TwoByTwoWithErrors(), 3, /*standard_errors=*/true),
            "               a/conv1            b/x\n"
            "a/conv1          1.000  0.250 ± 0.013\n"
            "b/x      0.250 ± 0.013              -\n");
  EXPECT_EQ(FormatTable(TwoByTwoWithErrors(), 3), FormatTable(TwoByTwo(), 3));
}

TEST(MatrixFormatTest, CsvAndJsonWithErrorsAddTheirColumnsAndField) {
  EXPECT_EQ(FormatCsv(TwoByTwoWithErrors(), 2, /*standard_errors=*/true),
            "row,a/conv1,a/conv1 SE,b/x,b/x SE\n"
            "a/conv1,1.00,nan,0.25,0.01\n"
            "b/x,0.25,0.01,nan,nan\n");
  const nlohmann::json j = MatrixJson(TwoByTwoWithErrors(), true);
  EXPECT_EQ(j["standard_errors"][0][1].get<double>(), 0.0125);
  EXPECT_TRUE(j["standard_errors"][0][0].is_null());
  EXPECT_FALSE(MatrixJson(TwoByTwoWithErrors()).contains("standard_errors"));
}

TEST(SessionFormatTest, GetShowsCountersAndStateSizes) {
  v1::Session session;
  session.set_session_id("run");
  session.mutable_config()->add_measures()->set_name("linear");
  session.mutable_config()->set_step_bucket(100);
  session.add_streams("a/conv1");
  session.add_streams("a/fc");
  session.set_batches_applied(7);
  session.set_batches_pending(2);
  session.set_batches_evicted(1);
  session.set_state_bytes(4096);
  session.set_pending_bytes(512);
  session.set_held_bytes(5000);
  EXPECT_EQ(FormatSession(session),
            "session run\n"
            "  measures:        linear:linear:unbiased\n"
            "  step bucket:     100\n"
            "  streams:         a/conv1 a/fc\n"
            "  batches applied: 7\n"
            "  batches pending: 2\n"
            "  batches evicted: 1\n"
            "  state bytes:     4096\n"
            "  pending bytes:   512\n"
            "  held bytes:      5000\n"
            "  pairs missed:    0\n");
  const nlohmann::json j = SessionJson(session);
  EXPECT_EQ(j["state_bytes"].get<int64_t>(), 4096);
  EXPECT_EQ(j["pending_bytes"].get<int64_t>(), 512);
  EXPECT_EQ(j["pairs_missed"].get<int64_t>(), 0);
}

// A session without declared streams shows its join settings, and missed
// pairs come with a pointer to what they mean.
TEST(SessionFormatTest, GetShowsJoinWindowExpectedSourcesAndMissedPairs) {
  v1::Session session;
  session.set_session_id("run");
  session.mutable_config()->add_measures()->set_name("linear");
  session.mutable_config()->add_expected_sources("a");
  session.mutable_config()->add_expected_sources("b");
  session.mutable_config()->set_join_window(16);
  session.set_pairs_missed(12);
  const std::string text = FormatSession(session);
  EXPECT_NE(text.find("  expected:        a b\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  join window:     16 batches\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("  pairs missed:    12  (layers arrived after their "
                      "batch left the join buffer"),
            std::string::npos)
      << text;
  const nlohmann::json j = SessionJson(session);
  EXPECT_EQ(j["pairs_missed"].get<int64_t>(), 12);
  EXPECT_EQ(j["join_window"].get<int64_t>(), 16);
  EXPECT_EQ(j["expected_sources"].size(), 2u);
}

}  // namespace
}  // namespace cka::ckactl
