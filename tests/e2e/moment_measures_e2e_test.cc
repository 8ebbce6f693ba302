// The comparison family (CCA R², CCA ρ̄, SVCCA, PWCCA, regression R²,
// Procrustes) as measures of the running service: every kind through
// CreateSession, the stream and GetSimilarity against the independent float64
// numpy oracle of tests/core/data/measures.json (its generator,
// make_measures.py, sits beside it and works on the activations, never on
// moments), on full-rank and rank-deficient cases; the invariances of
// core/MATH.md ("Rank rule and invariances") through the service; and the
// error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cka/client/activation_streamer.h"
#include "cka/client/client.h"
#include "cka/core/engine.h"
#include "cka/core/session.h"
#include "cka/server/server.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace cka::testing {
namespace {

using client::ActivationStreamer;
using client::Batch;
using client::BatchError;
using client::StreamerOptions;

// The oracle works on SVDs of the centred data, ckad on eigendecompositions
// of running float64 moments: they differ by rounding of about
// cond(C)·1e-16 with cond(C) < 1e4 on these cases. The contract is 1e-6.
constexpr double kOracleRel = 1e-6;
// Invariant maps change a value by rounding only (the maps' condition number
// is < 50); a map a measure is not invariant to changes it by far more.
constexpr double kInvariantRel = 1e-9;
constexpr double kChangedRel = 1e-4;

const nlohmann::json& Oracle() {
  static const auto* json = [] {
    std::ifstream in(CKA_MEASURES_JSON);
    EXPECT_TRUE(in.good()) << CKA_MEASURES_JSON;
    auto* j = new nlohmann::json(nlohmann::json::parse(in));
    return j;
  }();
  return *json;
}

double RelativeDifference(double a, double b) {
  return std::abs(a - b) / std::max({std::abs(a), std::abs(b), 1e-300});
}

struct Kind {
  v1::MeasureKind kind;
  const char* name;      // the measure's name in the sessions below
  const char* quantity;  // oracle quantity of entry (x, y)
  const char* swapped;   // of entry (y, x); null where the oracle has none
};

const std::vector<Kind>& Kinds() {
  static const auto* kinds = new std::vector<Kind>{
      {v1::CCA_R2, "cca_r2", "cca_r2", "cca_r2"},
      {v1::CCA_MEAN_RHO, "cca_mean_rho", "cca_mean_rho", "cca_mean_rho"},
      {v1::SVCCA, "svcca", "svcca", "svcca"},
      {v1::PWCCA, "pwcca", "pwcca", nullptr},
      {v1::REGRESSION_R2, "regression_r2", "regression_xy", "regression_yx"},
      {v1::PROCRUSTES, "procrustes", "procrustes", "procrustes"},
  };
  return *kinds;
}

// n × d row-major X·M for a d × d row-major M.
std::vector<double> Times(const std::vector<double>& x, int64_t n, int64_t d,
                          const std::vector<double>& m) {
  std::vector<double> out(n * d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < d; ++k)
      for (int64_t j = 0; j < d; ++j)
        out[i * d + j] += x[i * d + k] * m[k * d + j];
  return out;
}

class MomentMeasuresE2eTest : public ServerTest {
 protected:
  // Returns the config of a session with every kind (estimator left
  // unspecified: EXACT is the kinds' default) over declared `streams`.
  static v1::SessionConfig AllKinds(const std::vector<std::string>& streams) {
    v1::SessionConfig config;
    for (const Kind& k : Kinds()) {
      v1::Measure* m = config.add_measures();
      m->set_name(k.name);
      m->set_kind(k.kind);
    }
    for (const std::string& s : streams) config.add_streams(s);
    return config;
  }

  // Sends the n rows of `layers` (layer → n × width row-major) as source
  // "m", in two batches when n allows, and expects every batch acked OK.
  void Send(const std::string& session, int64_t n,
            const std::map<std::string,
                           std::pair<std::vector<double>, int64_t>>& layers) {
    StreamerOptions options;
    options.session_id = session;
    options.source = "m";
    absl::StatusOr<std::unique_ptr<ActivationStreamer>> streamer =
        ActivationStreamer::Create(*client_, options);
    ASSERT_TRUE(streamer.ok()) << streamer.status();
    const int64_t split = n >= 8 ? n / 2 : n;
    for (auto [begin, end] :
         {std::pair<int64_t, int64_t>{0, split}, {split, n}}) {
      if (begin == end) continue;
      Batch batch(absl::StrCat("rows", begin), 1);
      for (const auto& [layer, data] : layers) {
        const auto& [x, d] = data;
        batch.AddActivations(
            layer,
            std::vector<double>(x.begin() + begin * d, x.begin() + end * d),
            {end - begin, d});
      }
      ASSERT_TRUE((*streamer)->Submit(std::move(batch)).ok());
    }
    absl::StatusOr<std::vector<BatchError>> errors =
        (*streamer)->Close(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(errors.ok()) << errors.status();
    for (const BatchError& e : *errors)
      ADD_FAILURE() << e.batch_id << ": " << e.message;
  }

  v1::SimilarityMatrix Query(const std::string& session,
                             const std::string& measure) {
    v1::GetSimilarityRequest request;
    request.set_session_id(session);
    request.set_measure(measure);
    absl::StatusOr<v1::SimilarityMatrix> m = client_->GetSimilarity(request);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : v1::SimilarityMatrix{};
  }
};

// Expects `got` to be the oracle's `quantity` of `c`, or NaN with a note
// where the oracle has no value.
void ExpectOracle(double got, const nlohmann::json& c,
                  const std::string& quantity, const v1::SimilarityMatrix& m) {
  SCOPED_TRACE(absl::StrCat(c["name"].get<std::string>(), " ", quantity));
  if (c["errors"].contains(quantity)) {
    EXPECT_TRUE(std::isnan(got)) << got;
    EXPECT_NE(m.note().find("no variance"), std::string::npos) << m.note();
    return;
  }
  const double want = c["expected"][quantity].get<double>();
  EXPECT_LE(RelativeDifference(got, want), kOracleRel)
      << "ckad " << got << ", numpy " << want;
}

TEST_F(MomentMeasuresE2eTest,
       EveryKindEqualsNumpyOnFullRankAndRankDeficientCases) {
  int compared = 0;
  for (const nlohmann::json& c : Oracle()["cases"]) {
    const std::string id = c["name"];
    const int64_t n = c["n"], dx = c["dx"], dy = c["dy"];
    ASSERT_TRUE(client_->CreateSession(id, AllKinds({"m/x", "m/y"})).ok());
    Send(id, n,
         {{"x", {c["x"].get<std::vector<double>>(), dx}},
          {"y", {c["y"].get<std::vector<double>>(), dy}}});
    for (const Kind& k : Kinds()) {
      const v1::SimilarityMatrix m = Query(id, k.name);
      ASSERT_EQ(m.values_size(), 4) << id << " " << k.name;
      ExpectOracle(m.values(1), c, k.quantity, m);
      if (k.swapped != nullptr) ExpectOracle(m.values(2), c, k.swapped, m);
      compared += c["errors"].contains(k.quantity) ? 0 : 1;
      for (int64_t b : m.batches()) EXPECT_EQ(b, n >= 8 ? 2 : 1);
    }
  }
  // Most cases have values; a run that compared none would prove nothing.
  EXPECT_GE(compared, 40);
}

TEST_F(MomentMeasuresE2eTest, InvariancesHoldThroughTheService) {
  const nlohmann::json& c = Oracle()["cases"][0];
  ASSERT_EQ(c["name"], "full_rank");
  const nlohmann::json& t = Oracle()["transforms"];
  const int64_t n = c["n"], dx = c["dx"], dy = c["dy"];
  const std::vector<double> x = c["x"].get<std::vector<double>>();
  const std::vector<double> q = t["q"].get<std::vector<double>>();
  const double scale = t["scale"];
  std::vector<double> scaled_rotated = Times(x, n, dx, q);
  for (double& v : scaled_rotated) v *= scale;
  // A signed permutation of the neurons (an orthogonal map PWCCA's per-neuron
  // weights see too), scaled.
  std::vector<double> permuted(n * dx);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < dx; ++j) {
      permuted[i * dx + j] =
          (j % 2 == 0 ? scale : -scale) * x[i * dx + (j + 2) % dx];
    }
  }
  ASSERT_TRUE(client_
                  ->CreateSession(
                      "inv", AllKinds({"m/x", "m/qx", "m/ax", "m/y", "m/px"}))
                  .ok());
  Send("inv", n,
       {{"x", {x, dx}},
        {"qx", {scaled_rotated, dx}},
        {"ax", {Times(x, n, dx, t["a"].get<std::vector<double>>()), dx}},
        {"y", {c["y"].get<std::vector<double>>(), dy}},
        {"px", {permuted, dx}}});
  // Rows and columns in declared order: x, qx, ax, y, px.
  constexpr int kX = 0, kQx = 1, kAx = 2, kY = 3, kPx = 4, kStreams = 5;
  for (const Kind& k : Kinds()) {
    SCOPED_TRACE(k.name);
    const v1::SimilarityMatrix m = Query("inv", k.name);
    ASSERT_EQ(m.values_size(), kStreams * kStreams);
    auto at = [&](int i, int j) { return m.values(i * kStreams + j); };
    // Scaling and a signed permutation of the neurons: every kind is
    // invariant, on either side.
    EXPECT_LE(RelativeDifference(at(kPx, kY), at(kX, kY)), kInvariantRel);
    EXPECT_LE(RelativeDifference(at(kY, kPx), at(kY, kX)), kInvariantRel);
    // A general orthogonal map and scaling: every kind but PWCCA (whose
    // weights are per neuron).
    const double rotated_xy = RelativeDifference(at(kQx, kY), at(kX, kY));
    const double rotated_yx = RelativeDifference(at(kY, kQx), at(kY, kX));
    if (k.kind == v1::PWCCA) {
      EXPECT_GT(rotated_xy, kChangedRel);
    } else {
      EXPECT_LE(rotated_xy, kInvariantRel);
      EXPECT_LE(rotated_yx, kInvariantRel);
    }
    // A general invertible map: CCA (all of it) and R²(X → Y) are invariant;
    // PWCCA, Procrustes and R²(Y → X) are not (core/MATH.md's table). SVCCA
    // keeps every direction of this 5-wide X only if its 99 % cut does.
    const double changed_xy = RelativeDifference(at(kAx, kY), at(kX, kY));
    const double changed_yx = RelativeDifference(at(kY, kAx), at(kY, kX));
    switch (k.kind) {
      case v1::CCA_R2:
      case v1::CCA_MEAN_RHO:
        EXPECT_LE(changed_xy, kInvariantRel);
        break;
      case v1::REGRESSION_R2:
        EXPECT_LE(changed_xy, kInvariantRel);
        EXPECT_GT(changed_yx, kChangedRel);
        break;
      case v1::PWCCA:
      case v1::PROCRUSTES:
        EXPECT_GT(changed_xy, kChangedRel);
        break;
      default:
        break;
    }
    // A stream against itself.
    if (k.kind != v1::PROCRUSTES) {
      EXPECT_NEAR(at(kX, kX), 1.0, 1e-9);
    }
    EXPECT_NEAR(at(kY, kY), 1.0, 1e-9);
  }
}

TEST_F(MomentMeasuresE2eTest, SessionReportsTheKindAndItsExactEstimator) {
  ASSERT_TRUE(client_->CreateSession("kinds", AllKinds({"m/x"})).ok());
  absl::StatusOr<v1::Session> s = client_->GetSession("kinds");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->config().measures_size(), static_cast<int>(Kinds().size()));
  for (int i = 0; i < s->config().measures_size(); ++i) {
    EXPECT_EQ(s->config().measures(i).kind(), Kinds()[i].kind);
    EXPECT_EQ(s->config().measures(i).estimator(), v1::EXACT);
  }
}

TEST_F(MomentMeasuresE2eTest, ErrorsNameTheFieldAndValue) {
  struct Bad {
    const char* what;
    v1::SessionConfig config;
    const char* says;
  };
  std::vector<Bad> bad;
  {
    v1::SessionConfig c = AllKinds({"m/x"});
    c.mutable_measures(2)->set_kernel(v1::RBF);
    c.mutable_measures(2)->set_rbf_threshold(0.5);
    bad.push_back({"rbf kernel", c, "needs kernel linear, not rbf"});
  }
  {
    v1::SessionConfig c = AllKinds({"m/x"});
    c.mutable_measures(0)->set_estimator(v1::UNBIASED);
    bad.push_back({"minibatch estimator", c, "needs estimator exact"});
  }
  bad.push_back({"undeclared streams", AllKinds({}), "config.streams"});
  {
    v1::SessionConfig c = AllKinds({"m/x"});
    c.mutable_measures(1)->set_kind(static_cast<v1::MeasureKind>(42));
    bad.push_back({"kind from the wire", c, "config.measures[1].kind: 42"});
  }
  for (const Bad& b : bad) {
    absl::StatusOr<v1::Session> s = client_->CreateSession("bad", b.config);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << b.what;
    EXPECT_NE(s.status().message().find(b.says), std::string::npos)
        << b.what << ": " << s.status();
  }

  v1::SessionConfig config = AllKinds({"m/x", "m/y"});
  config.set_step_bucket(10);
  ASSERT_TRUE(client_->CreateSession("ranged", config).ok());
  v1::GetSimilarityRequest request;
  request.set_session_id("ranged");
  request.set_measure("svcca");
  request.set_step_min(0);
  request.set_step_max(9);
  absl::StatusOr<v1::SimilarityMatrix> m = client_->GetSimilarity(request);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("kept for all time only"),
            std::string::npos)
      << m.status();
  v1::GetSimilaritySeriesRequest series =
      SeriesRequest("ranged", {{"m/x", "m/y"}});
  series.set_measure("procrustes");
  absl::StatusOr<v1::SimilaritySeries> s = client_->GetSimilaritySeries(series);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("kept for all time only"),
            std::string::npos)
      << s.status();
}

TEST_F(MomentMeasuresE2eTest, CkactlCreatesAndPrintsAMomentMeasure) {
  const std::string server = absl::StrCat("127.0.0.1:", server_->port());
  ProcessResult r =
      RunProcess({CKACTL_BINARY, "--server", server, "create", "kinds",
                  "--stream", "m/x", "--stream", "m/y", "--measure",
                  "cca:cca_r2", "--measure", "reg:regression_r2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  absl::StatusOr<v1::Session> s = client_->GetSession("kinds");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->config().measures_size(), 2);
  EXPECT_EQ(s->config().measures(0).kind(), v1::CCA_R2);
  EXPECT_EQ(s->config().measures(1).kind(), v1::REGRESSION_R2);
  EXPECT_EQ(s->config().measures(1).estimator(), v1::EXACT);
  // constant_x: x has no variance, so the answer carries a note.
  const nlohmann::json* c = nullptr;
  for (const nlohmann::json& each : Oracle()["cases"]) {
    if (each["name"] == "constant_x") c = &each;
  }
  ASSERT_NE(c, nullptr);
  Send("kinds", (*c)["n"],
       {{"x", {(*c)["x"].get<std::vector<double>>(), (*c)["dx"]}},
        {"y", {(*c)["y"].get<std::vector<double>>(), (*c)["dy"]}}});
  const v1::SimilarityMatrix want = Query("kinds", "reg");
  r = RunProcess({CKACTL_BINARY, "--server", server, "matrix", "kinds",
                  "--measure", "reg", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json got = nlohmann::json::parse(r.out);
  ASSERT_FALSE(want.note().empty());
  EXPECT_EQ(got["note"], want.note());
  // R²(x → y) = 0 (a predictor without variance); R²(y → x) has no value.
  EXPECT_EQ(got["values"][0][1].get<double>(), 0.0);
  EXPECT_TRUE(got["values"][1][0].is_null());
  r = RunProcess({CKACTL_BINARY, "--server", server, "matrix", "kinds",
                  "--measure", "reg"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("note: "), std::string::npos) << r.out;
}

// A moment query its caller gave up on stops between pairs. Four streams of
// 875 make a CCA query of about 10 pairs of O(p³) work (seconds); two such
// queries with a 50 ms deadline hold both of ckad's query threads only until
// their next pair. A third query (exact CKA, no spectra) is answered once a
// query thread is free, and by then fewer than the four streams have been
// decomposed; without the poll, the query that freed the thread would have
// run to its end, with all four spectra.
TEST_F(MomentMeasuresE2eTest, QueryPastItsDeadlineStopsBetweenPairs) {
  const std::string id = "deadline";
  const std::vector<std::string> streams = {"a", "b", "c", "d"};
  v1::SessionConfig config;
  v1::Measure* cca = config.add_measures();
  cca->set_name("cca_r2");
  cca->set_kind(v1::CCA_R2);
  v1::Measure* cka = config.add_measures();
  cka->set_name("cka");
  cka->set_estimator(v1::EXACT);
  for (const std::string& s : streams) config.add_streams("m/" + s);
  ASSERT_TRUE(client_->CreateSession(id, config).ok());
  const int64_t n = 4, d = 875;
  std::map<std::string, std::pair<std::vector<double>, int64_t>> layers;
  for (size_t i = 0; i < streams.size(); ++i) {
    layers[streams[i]] = {RandomActivations(n, d, 11 + i).x, d};
  }
  Send(id, n, layers);
  v1::GetSimilarityRequest request;
  request.set_session_id(id);
  request.set_measure("cca_r2");
  for (int i = 0; i < 2; ++i) {
    const absl::StatusOr<v1::SimilarityMatrix> late =
        client_->GetSimilarity(request, absl::Milliseconds(50));
    EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded)
        << late.status();
  }
  request.set_measure("cka");
  const absl::StatusOr<v1::SimilarityMatrix> small =
      client_->GetSimilarity(request, absl::Minutes(5));
  ASSERT_TRUE(small.ok()) << small.status();
  absl::StatusOr<std::shared_ptr<core::Session>> session =
      server_->engine().GetSession(id);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_LT((*session)->Info().spectra_computed, 4);
}

}  // namespace
}  // namespace cka::testing
