// The JSON API of ckad's HTTP server (--http-listen): the real server
// in-process on 127.0.0.1:0, read over HTTP with httplib's client and over
// gRPC with the real client library; every route must answer what gRPC
// answers, errors included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cka/client/activation_streamer.h"
#include "cka/client/client.h"
#include "cka/core/memory_budget.h"
#include "cka/server/server.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/http_server.h"
#include "server/http_status.h"
#include "server/web/web_assets.h"
#include "test_util.h"

namespace cka::testing {
namespace {

constexpr char kReaderToken[] = "reader-token-0123456789abcdef";
constexpr char kWriterToken[] = "writer-token-0123456789abcdef";

// Returns the answer of GET `path` (with an Authorization header when `token`
// is set); fails the test when no answer comes.
httplib::Result Get(int port, const std::string& path,
                    const std::string& token = "") {
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(60, 0);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  httplib::Result result = http.Get(path, headers);
  EXPECT_TRUE(result) << "GET " << path << ": "
                      << httplib::to_string(result.error());
  return result;
}

// Returns the message a JSON body holds (protobuf's JSON mapping).
template <typename Message>
Message FromJson(const std::string& json) {
  Message message;
  google::protobuf::util::JsonParseOptions options;
  const auto parsed =
      google::protobuf::util::JsonStringToMessage(json, &message, options);
  EXPECT_TRUE(parsed.ok()) << parsed.ToString() << " in " << json;
  return message;
}

// Expects the standard errors of an answer over HTTP equal to gRPC's, bit for
// bit (NaN where gRPC's are NaN), and present: every answer carries one per
// value.
void ExpectSameStandardErrors(
    const google::protobuf::RepeatedField<double>& http,
    const google::protobuf::RepeatedField<double>& grpc, int values) {
  ASSERT_EQ(grpc.size(), values);
  ASSERT_EQ(http.size(), grpc.size());
  for (int i = 0; i < http.size(); ++i) {
    const double h = http.Get(i), g = grpc.Get(i);
    if (std::isnan(g)) {
      EXPECT_TRUE(std::isnan(h)) << "standard error " << i << ": " << h;
    } else {
      EXPECT_EQ(std::memcmp(&h, &g, sizeof h), 0)
          << "standard error " << i << ": " << h << " over HTTP, " << g
          << " over gRPC";
    }
  }
}

// Expects the two matrices equal, their values and standard errors bit for bit
// (NaN where the other has NaN).
void ExpectSameMatrix(const v1::SimilarityMatrix& http,
                      const v1::SimilarityMatrix& grpc) {
  EXPECT_EQ(http.session_id(), grpc.session_id());
  EXPECT_EQ(http.measure(), grpc.measure());
  EXPECT_EQ(std::vector<std::string>(http.rows().begin(), http.rows().end()),
            std::vector<std::string>(grpc.rows().begin(), grpc.rows().end()));
  EXPECT_EQ(std::vector<std::string>(http.cols().begin(), http.cols().end()),
            std::vector<std::string>(grpc.cols().begin(), grpc.cols().end()));
  EXPECT_EQ(std::vector<int64_t>(http.batches().begin(), http.batches().end()),
            std::vector<int64_t>(grpc.batches().begin(), grpc.batches().end()));
  ASSERT_EQ(http.values_size(), grpc.values_size());
  for (int i = 0; i < http.values_size(); ++i) {
    const double h = http.values(i);
    const double g = grpc.values(i);
    if (std::isnan(g)) {
      EXPECT_TRUE(std::isnan(h)) << "value " << i << ": " << h;
    } else {
      EXPECT_EQ(std::memcmp(&h, &g, sizeof h), 0)
          << "value " << i << ": " << h << " over HTTP, " << g << " over gRPC";
    }
  }
  ExpectSameStandardErrors(http.standard_errors(), grpc.standard_errors(),
                           grpc.values_size());
}

// Expects an error answer: `status`, the code name and gRPC's message.
void ExpectError(const httplib::Result& result, int status,
                 const std::string& code, const std::string& message_part) {
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, status) << result->body;
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  const nlohmann::json body =
      nlohmann::json::parse(result->body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << result->body;
  EXPECT_EQ(body.value("code", ""), code) << result->body;
  EXPECT_NE(body.value("message", "").find(message_part), std::string::npos)
      << result->body << " should contain " << message_part;
}

// Returns the value of the series of `name` whose labels include every one
// of `labels` (each written name="value"); -1 when there is none. Fails the
// test when several series match.
double MetricValue(const std::string& text, const std::string& name,
                   const std::vector<std::string>& labels = {}) {
  double value = -1;
  int found = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t end = line.find_first_of("{ ");
    if (end == std::string::npos || line.substr(0, end) != name) continue;
    const size_t space = line.rfind(' ');
    const std::string series = line.substr(0, space);
    bool all = true;
    for (const std::string& label : labels) {
      all = all && series.find(label) != std::string::npos;
    }
    if (!all) continue;
    ++found;
    value = std::stod(line.substr(space + 1));
  }
  EXPECT_LE(found, 1) << name << " matches " << found << " series";
  return value;
}

// One server-sent event.
struct Event {
  std::string event;
  std::string data;
};

// Reads GET `path` (an event stream) on a thread of its own and collects its
// events until Stop.
class EventReader {
 public:
  EventReader(int port, const std::string& path) : http_("127.0.0.1", port) {
    http_.set_read_timeout(60, 0);
    thread_ = std::thread([this, path] {
      httplib::Result result = http_.Get(
          path, {{"Accept-Encoding", "gzip, deflate, br"}},
          [this](const httplib::Response& response) {
            absl::MutexLock lock(&mu_);
            status_ = response.status;
            headers_ = response.headers;
            return true;
          },
          [this](const char* data, size_t size) {
            absl::MutexLock lock(&mu_);
            text_.append(data, size);
            return true;
          });
      absl::MutexLock lock(&mu_);
      ended_ = true;
    });
  }
  ~EventReader() { Stop(); }

  // Closes the connection and joins the thread.
  void Stop() {
    http_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Waits (with a deadline that only catches hangs) until the status has
  // come, and returns it.
  int Status() {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](EventReader* r) { return r->status_ != 0 || r->ended_; }, this),
        absl::Seconds(60));
    return status_;
  }
  std::string Header(const std::string& name) {
    absl::MutexLock lock(&mu_);
    auto it = headers_.find(name);
    return it == headers_.end() ? "" : it->second;
  }
  std::string Text() {
    absl::MutexLock lock(&mu_);
    return text_;
  }

  // Waits until the stream holds more than `count` events (or ends), and
  // returns them all.
  std::vector<Event> WaitForMoreThan(size_t count) {
    absl::MutexLock lock(&mu_);
    count_ = count;
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](EventReader* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
              return r->ended_ || Parse(r->text_).size() > r->count_;
            },
            this),
        absl::Seconds(60));
    return Parse(text_);
  }

  // Returns the events of `text` (complete ones; comments left out).
  static std::vector<Event> Parse(const std::string& text) {
    std::vector<Event> events;
    size_t start = 0;
    for (size_t end; (end = text.find("\n\n", start)) != std::string::npos;
         start = end + 2) {
      Event e;
      std::istringstream lines(text.substr(start, end - start));
      for (std::string line; std::getline(lines, line);) {
        if (line.rfind("event: ", 0) == 0) e.event = line.substr(7);
        if (line.rfind("data: ", 0) == 0) e.data = line.substr(6);
      }
      if (!e.event.empty()) events.push_back(std::move(e));
    }
    return events;
  }

 private:
  httplib::Client http_;
  std::thread thread_;
  absl::Mutex mu_;
  int status_ = 0;
  httplib::Headers headers_;
  std::string text_;
  size_t count_ = 0;
  bool ended_ = false;
};

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.http_listen = "127.0.0.1:0";
    options.data_dir = DataDir();
    server_ = StartServer(options);
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(server_->http_port(), 0);
    client_ = ConnectClient(server_->port());
  }
  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown();
  }

  // Creates `session` with two measures and a step bucket of 10, and streams
  // `count` batches of two layers of source "a" and one of source "b" at
  // steps 0, 5, 10, ...; source "b" sends only the first batch, so that pairs
  // of b over later buckets have no common batch (NaN).
  void CreateAndFill(const std::string& session, int count) {
    v1::SessionConfig config;
    for (const auto& [name, estimator] :
         {std::pair{"lin", v1::UNBIASED}, std::pair{"mb", v1::BIASED}}) {
      v1::Measure* m = config.add_measures();
      m->set_name(name);
      m->set_kernel(v1::LINEAR);
      m->set_estimator(estimator);
    }
    config.set_step_bucket(10);
    config.set_join_window(1000);
    ASSERT_TRUE(client_->CreateSession(session, config).ok());
    std::map<std::string, std::unique_ptr<client::ActivationStreamer>>
        streamers;
    for (const std::string source : {"a", "b"}) {
      client::StreamerOptions options;
      options.session_id = session;
      options.source = source;
      absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> s =
          client::ActivationStreamer::Create(*client_, options);
      ASSERT_TRUE(s.ok()) << s.status();
      streamers[source] = *std::move(s);
    }
    for (int b = 0; b < count; ++b) {
      const Activations l1 = RandomActivations(12, 5, 100 + b);
      const Activations l2 = RandomActivations(12, 7, 200 + b, &l1, 1.0);
      client::Batch a(absl::StrCat("b", b), 5 * b);
      a.AddActivations("l1", std::vector<double>(l1.x), {l1.n, l1.d});
      a.AddActivations("l2", std::vector<double>(l2.x), {l2.n, l2.d});
      ASSERT_TRUE(streamers["a"]->Submit(std::move(a)).ok());
      if (b == 0) {
        const Activations m1 = RandomActivations(12, 6, 300 + b, &l1, 0.5);
        client::Batch bb(absl::StrCat("b", b), 5 * b);
        bb.AddActivations("m1", std::vector<double>(m1.x), {m1.n, m1.d});
        ASSERT_TRUE(streamers["b"]->Submit(std::move(bb)).ok());
      }
    }
    for (auto& [source, streamer] : streamers) {
      absl::StatusOr<std::vector<client::BatchError>> errors =
          streamer->Close(absl::Now() + absl::Seconds(30));
      ASSERT_TRUE(errors.ok()) << errors.status();
      for (const client::BatchError& e : *errors) {
        ADD_FAILURE() << e.batch_id << ": " << e.message;
      }
    }
  }

  // ckad's --data-dir; empty: state in memory only.
  virtual std::string DataDir() { return ""; }
  int http_port() const { return server_->http_port(); }

  std::string MetricsText() {
    httplib::Result metrics = Get(http_port(), "/metrics");
    EXPECT_TRUE(metrics);
    if (!metrics) return "";
    EXPECT_EQ(metrics->status, 200);
    EXPECT_EQ(metrics->get_header_value("Content-Type"),
              "text/plain; version=0.0.4; charset=utf-8");
    return metrics->body;
  }

  // Streams one batch of `layers` of `source` and returns the codes of the
  // batches refused (empty when acked OK).
  std::vector<absl::StatusCode> StreamOne(const std::string& session,
                                          const std::string& source,
                                          std::vector<std::string> layers,
                                          const std::string& batch_id) {
    client::StreamerOptions options;
    options.session_id = session;
    options.source = source;
    absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> s =
        client::ActivationStreamer::Create(*client_, options);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return {};
    const Activations x = RandomActivations(12, 5, 100);
    client::Batch batch(batch_id, 0);
    for (const std::string& layer : layers) {
      batch.AddActivations(layer, std::vector<double>(x.x), {x.n, x.d});
    }
    EXPECT_TRUE((*s)->Submit(std::move(batch)).ok());
    absl::StatusOr<std::vector<client::BatchError>> errors =
        (*s)->Close(absl::Now() + absl::Seconds(30));
    EXPECT_TRUE(errors.ok()) << errors.status();
    std::vector<absl::StatusCode> codes;
    if (errors.ok()) {
      for (const client::BatchError& e : *errors) codes.push_back(e.code);
    }
    return codes;
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(HttpApiTest, SessionRoutesAnswerWhatGrpcAnswers) {
  CreateAndFill("run 1/ab", 3);
  CreateAndFill("run2", 1);

  httplib::Result listed = Get(http_port(), "/api/v1/sessions");
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->status, 200);
  EXPECT_EQ(listed->get_header_value("Content-Type"), "application/json");
  const v1::ListSessionsResponse http_list =
      FromJson<v1::ListSessionsResponse>(listed->body);
  absl::StatusOr<std::vector<v1::Session>> grpc_list = client_->ListSessions();
  ASSERT_TRUE(grpc_list.ok()) << grpc_list.status();
  ASSERT_EQ(http_list.sessions_size(), static_cast<int>(grpc_list->size()));
  for (int i = 0; i < http_list.sessions_size(); ++i) {
    EXPECT_EQ(http_list.sessions(i).SerializeAsString(),
              (*grpc_list)[i].SerializeAsString())
        << http_list.sessions(i).DebugString();
  }
  // Proto field names and default values, as the page reads them.
  const nlohmann::json raw = nlohmann::json::parse(listed->body);
  EXPECT_TRUE(raw["sessions"][0].contains("batches_applied")) << listed->body;
  EXPECT_TRUE(raw["sessions"][0].contains("pairs_missed")) << listed->body;

  // The id's '/' and ' ' travel URL-encoded in one path segment.
  httplib::Result got = Get(http_port(), "/api/v1/sessions/run%201%2Fab");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 200) << got->body;
  absl::StatusOr<v1::Session> grpc_got = client_->GetSession("run 1/ab");
  ASSERT_TRUE(grpc_got.ok());
  EXPECT_EQ(FromJson<v1::Session>(got->body).SerializeAsString(),
            grpc_got->SerializeAsString());
  EXPECT_GT(grpc_got->batches_applied(), 0);
}

TEST_F(HttpApiTest, SimilarityAnswersGrpcsValuesBitForBit) {
  CreateAndFill("s", 4);
  struct Case {
    std::string query;  // after "?"
    v1::GetSimilarityRequest grpc;
  };
  std::vector<Case> cases;
  auto add = [&](std::string query, auto fill) {
    Case c{std::move(query), {}};
    c.grpc.set_session_id("s");
    fill(c.grpc);
    cases.push_back(std::move(c));
  };
  add("", [](v1::GetSimilarityRequest&) {});
  add("measure=mb", [](v1::GetSimilarityRequest& r) { r.set_measure("mb"); });
  add("measure=lin&rows=a%2Fl2&rows=b%2Fm1&cols=a%2Fl1",
      [](v1::GetSimilarityRequest& r) {
        r.set_measure("lin");
        r.add_rows("a/l2");
        r.add_rows("b/m1");
        r.add_cols("a/l1");
      });
  add("step_min=10&step_max=19", [](v1::GetSimilarityRequest& r) {
    r.set_step_min(10);
    r.set_step_max(19);
  });
  add("step_min=-10", [](v1::GetSimilarityRequest& r) { r.set_step_min(-10); });
  int nan_seen = 0, se_seen = 0, se_nan_seen = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.query);
    httplib::Result http = Get(
        http_port(), absl::StrCat("/api/v1/sessions/s/similarity?", c.query));
    ASSERT_TRUE(http);
    ASSERT_EQ(http->status, 200) << http->body;
    absl::StatusOr<v1::SimilarityMatrix> grpc = client_->GetSimilarity(c.grpc);
    ASSERT_TRUE(grpc.ok()) << grpc.status();
    ASSERT_GT(grpc->values_size(), 0);
    ExpectSameMatrix(FromJson<v1::SimilarityMatrix>(http->body), *grpc);
    for (double v : grpc->values()) nan_seen += std::isnan(v);
    for (double se : grpc->standard_errors()) {
      se_seen += std::isfinite(se);
      se_nan_seen += std::isnan(se);
    }
    // An SE without a value is "NaN" in the JSON, as a value is.
    const nlohmann::json raw = nlohmann::json::parse(http->body);
    ASSERT_TRUE(raw.contains("standard_errors")) << http->body;
    for (int i = 0; i < grpc->standard_errors_size(); ++i) {
      if (std::isnan(grpc->standard_errors(i))) {
        EXPECT_EQ(raw["standard_errors"][i], "NaN") << http->body;
      }
    }
  }
  // The step range without b's batch has NaN entries: the case is covered; and
  // both finite and NaN standard errors (one batch) went through.
  EXPECT_GT(nan_seen, 0);
  EXPECT_GT(se_seen, 0);
  EXPECT_GT(se_nan_seen, 0);
}

TEST_F(HttpApiTest, SeriesAnswersGrpcsSeriesBitForBit) {
  CreateAndFill("s", 4);  // steps 0, 5, 10, 15: buckets [0, 9] and [10, 19]
  v1::GetSimilaritySeriesRequest request =
      SeriesRequest("s", {{"a/l1", "a/l2"}, {"b/m1", "a/l1"}});
  request.set_measure("mb");
  absl::StatusOr<v1::SimilaritySeries> grpc =
      client_->GetSimilaritySeries(request);
  ASSERT_TRUE(grpc.ok()) << grpc.status();
  ASSERT_EQ(grpc->buckets_size(), 2);
  httplib::Result http =
      Get(http_port(),
          "/api/v1/sessions/s/series?measure=mb&row=a%2Fl1&col=a%2Fl2&"
          "row=b%2Fm1&col=a%2Fl1");
  ASSERT_TRUE(http);
  ASSERT_EQ(http->status, 200) << http->body;
  const v1::SimilaritySeries json = FromJson<v1::SimilaritySeries>(http->body);
  EXPECT_EQ(json.session_id(), "s");
  EXPECT_EQ(json.measure(), "mb");
  EXPECT_EQ(json.step_bucket(), 10);
  ASSERT_EQ(json.pairs_size(), 2);
  EXPECT_EQ(json.pairs(1).row(), "b/m1");
  EXPECT_EQ(json.pairs(1).col(), "a/l1");
  ASSERT_EQ(json.buckets_size(), grpc->buckets_size());
  int nan_seen = 0;
  for (int b = 0; b < json.buckets_size(); ++b) {
    const v1::SeriesBucket& h = json.buckets(b);
    const v1::SeriesBucket& g = grpc->buckets(b);
    EXPECT_EQ(h.step_first(), g.step_first());
    EXPECT_EQ(h.step_last(), g.step_last());
    ASSERT_EQ(h.values_size(), 2);
    ASSERT_EQ(g.values_size(), 2);
    for (int p = 0; p < 2; ++p) {
      EXPECT_EQ(h.batches(p), g.batches(p));
      if (std::isnan(g.values(p))) {
        ++nan_seen;
        EXPECT_TRUE(std::isnan(h.values(p))) << h.values(p);
      } else {
        EXPECT_EQ(h.values(p), g.values(p)) << "bucket " << b << " pair " << p;
      }
    }
    ExpectSameStandardErrors(h.standard_errors(), g.standard_errors(), 2);
  }
  // b sent only the first batch: its pair has no value in the second bucket.
  EXPECT_EQ(nan_seen, 1);

  v1::GetSimilaritySeriesRequest unknown = request;
  unknown.mutable_pairs(0)->set_col("a/zz");
  const absl::Status grpc_unknown =
      client_->GetSimilaritySeries(unknown).status();
  ASSERT_EQ(grpc_unknown.code(), absl::StatusCode::kNotFound);
  ExpectError(
      Get(http_port(), "/api/v1/sessions/s/series?row=a%2Fl1&col=a%2Fzz"), 404,
      "NOT_FOUND", std::string(grpc_unknown.message()));
  ExpectError(Get(http_port(), "/api/v1/sessions/s/series?row=a%2Fl1"), 400,
              "INVALID_ARGUMENT", "1 rows and 0 cols");
  ExpectError(Get(http_port(), "/api/v1/sessions/s/series"), 400,
              "INVALID_ARGUMENT", "pairs");
  ExpectError(Get(http_port(), "/api/v1/sessions/s/series?rows=a%2Fl1"), 400,
              "INVALID_ARGUMENT", "'rows': unknown");
  ExpectError(Get(http_port(), "/api/v1/sessions/nope/series?row=a&col=a"), 404,
              "NOT_FOUND", "nope");
}

TEST_F(HttpApiTest, ErrorsAreGrpcsCodesAndMessages) {
  CreateAndFill("s", 1);
  // Unknown session and measure: the service's code and message.
  v1::GetSimilarityRequest unknown;
  unknown.set_session_id("nope");
  const absl::Status grpc_unknown = client_->GetSimilarity(unknown).status();
  ExpectError(Get(http_port(), "/api/v1/sessions/nope/similarity"), 404,
              "NOT_FOUND", std::string(grpc_unknown.message()));
  ExpectError(Get(http_port(), "/api/v1/sessions/nope"), 404, "NOT_FOUND",
              "nope");
  v1::GetSimilarityRequest bad_measure;
  bad_measure.set_session_id("s");
  bad_measure.set_measure("cosine");
  const absl::Status grpc_measure =
      client_->GetSimilarity(bad_measure).status();
  ASSERT_FALSE(grpc_measure.ok());
  ExpectError(Get(http_port(), "/api/v1/sessions/s/similarity?measure=cosine"),
              grpc_measure.code() == absl::StatusCode::kNotFound ? 404 : 400,
              absl::StatusCodeToString(grpc_measure.code()), "cosine");
  v1::GetSimilarityRequest bad_row = bad_measure;
  bad_row.clear_measure();
  bad_row.add_rows("a/zz");
  const absl::Status grpc_row = client_->GetSimilarity(bad_row).status();
  ASSERT_FALSE(grpc_row.ok());
  ExpectError(Get(http_port(), "/api/v1/sessions/s/similarity?rows=a%2Fzz"),
              grpc_row.code() == absl::StatusCode::kNotFound ? 404 : 400,
              absl::StatusCodeToString(grpc_row.code()),
              std::string(grpc_row.message()));
  // A step range the session refuses: its message, over both transports.
  v1::GetSimilarityRequest bad_step;
  bad_step.set_session_id("s");
  bad_step.set_step_min(-5);
  const absl::Status grpc_step = client_->GetSimilarity(bad_step).status();
  ASSERT_EQ(grpc_step.code(), absl::StatusCode::kInvalidArgument);
  ExpectError(Get(http_port(), "/api/v1/sessions/s/similarity?step_min=-5"),
              400, "INVALID_ARGUMENT", std::string(grpc_step.message()));
  // The query's syntax: named parameter and value.
  ExpectError(Get(http_port(), "/api/v1/sessions/s/similarity?step_min=12x"),
              400, "INVALID_ARGUMENT", "step_min='12x'");
  ExpectError(
      Get(http_port(),
          "/api/v1/sessions/s/similarity?step_max=99999999999999999999"),
      400, "INVALID_ARGUMENT", "step_max");
  ExpectError(Get(http_port(), "/api/v1/sessions/s/similarity?colz=a"), 400,
              "INVALID_ARGUMENT", "'colz'");
  ExpectError(
      Get(http_port(), "/api/v1/sessions/s/similarity?measure=a&measure=b"),
      400, "INVALID_ARGUMENT", "measure");
  ExpectError(Get(http_port(), "/api/v1/sessions?x=1"), 400, "INVALID_ARGUMENT",
              "'x'");
  ExpectError(Get(http_port(), "/api/v2/sessions"), 404, "NOT_FOUND",
              "/api/v2/sessions");
  // Read-only: writes stay on gRPC.
  httplib::Client http("127.0.0.1", http_port());
  httplib::Result post =
      http.Post("/api/v1/sessions", "{}", "application/json");
  ExpectError(post, 405, "UNIMPLEMENTED", "gRPC");

  httplib::Result health = Get(http_port(), "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
}

TEST_F(HttpApiTest, ThePageIsServedWithItsSecurityPolicy) {
  for (const std::string path : {"/", "/index.html", "/main.js", "/main.css"}) {
    SCOPED_TRACE(path);
    const std::optional<server::WebAsset> asset = server::FindWebAsset(path);
    ASSERT_TRUE(asset.has_value());
    httplib::Result page = Get(http_port(), path);
    ASSERT_TRUE(page);
    EXPECT_EQ(page->status, 200);
    EXPECT_EQ(page->body, asset->body);
    EXPECT_EQ(page->get_header_value("Content-Type"), asset->content_type);
    EXPECT_EQ(page->get_header_value("Content-Security-Policy"),
              server::kWebAssetSecurityPolicy);
  }
  ExpectError(Get(http_port(), "/no-such-file.js"), 404, "NOT_FOUND",
              "/no-such-file.js");
}

TEST_F(HttpApiTest, OversizedRequestsAreRefusedWithAStatusAndCkadLives) {
  httplib::Client http("127.0.0.1", http_port());
  // A request line over httplib's 8 KiB.
  httplib::Result uri =
      http.Get(absl::StrCat("/api/v1/sessions/", std::string(9000, 'x')));
  ASSERT_TRUE(uri);
  EXPECT_EQ(uri->status, 414);
  // A header line over 8 KiB.
  httplib::Result header =
      http.Get("/healthz", {{"X-Padding", std::string(9000, 'y')}});
  ASSERT_TRUE(header);
  EXPECT_EQ(header->status, 400);
  // A large body: refused by its method before a byte of it is read, and
  // the connection closed. The client may see that close (a reset) before
  // the answer, as it is still sending.
  httplib::Result body =
      http.Post("/api/v1/sessions", std::string(1 << 20, 'z'), "text/plain");
  if (body) {
    EXPECT_EQ(body->status, 405);
  }
  // A token that gRPC metadata cannot carry.
  httplib::Result token =
      http.Get("/api/v1/sessions", {{"Authorization", "Bearer \x01\x02"}});
  ASSERT_TRUE(token);
  EXPECT_EQ(token->status, 400);

  httplib::Result health = Get(http_port(), "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_TRUE(client_->ListSessions().ok());
}

TEST_F(HttpApiTest, MetricsCountTheCallsAndBatchesAndPassPromtool) {
  const std::string before = MetricsText();
  const std::vector<std::string> get_similarity_ok = {
      "grpc_code=\"OK\"", "grpc_method=\"GetSimilarity\"",
      "grpc_service=\"cka.v1.Similarity\"", "grpc_type=\"unary\""};
  const std::vector<std::string> applied = {"outcome=\"applied\""};
  const std::vector<std::string> duplicate = {"outcome=\"duplicate\""};
  const std::vector<std::string> not_found = {"outcome=\"not_found\""};
  // Present at zero before any call.
  EXPECT_EQ(MetricValue(before, "grpc_server_handled_total", get_similarity_ok),
            0);
  EXPECT_EQ(MetricValue(before, "ckad_batches_total", applied), 0);
  EXPECT_EQ(MetricValue(before, "ckad_sessions"), 0);

  CreateAndFill("s", 3);  // 3 batches of source a, 1 of source b
  EXPECT_TRUE(
      StreamOne("s", "b", {"m1"}, "b0").empty());  // b's first batch again
  EXPECT_EQ(StreamOne("nope", "a", {"l1"}, "x"),
            std::vector<absl::StatusCode>{absl::StatusCode::kNotFound});
  v1::GetSimilarityRequest query;
  query.set_session_id("s");
  ASSERT_TRUE(client_->GetSimilarity(query).ok());
  ASSERT_TRUE(client_->GetSimilarity(query).ok());
  httplib::Result http = Get(http_port(), "/api/v1/sessions/s/similarity");
  ASSERT_TRUE(http);
  ASSERT_EQ(http->status, 200);

  const std::string after = MetricsText();
  EXPECT_EQ(MetricValue(after, "grpc_server_handled_total", get_similarity_ok),
            3);
  EXPECT_EQ(MetricValue(after, "ckad_batches_total", applied), 4);
  EXPECT_EQ(MetricValue(after, "ckad_batches_total", duplicate), 1);
  EXPECT_EQ(MetricValue(after, "ckad_batches_total", not_found), 1);
  EXPECT_EQ(MetricValue(after, "ckad_ack_latency_seconds_count"), 6);
  EXPECT_EQ(MetricValue(after, "grpc_server_msg_received_total",
                        {"grpc_method=\"StreamActivations\""}),
            6);
  EXPECT_EQ(MetricValue(after, "ckad_sessions"), 1);
  EXPECT_GT(MetricValue(after, "ckad_state_bytes"), 0);
  EXPECT_GT(MetricValue(after, "ckad_memory_budget_used_bytes"), 0);
  EXPECT_GT(MetricValue(after, "process_resident_memory_bytes"), 0);
  EXPECT_EQ(MetricValue(after, "ckad_build_info"), 1);

  // Prometheus' own linter (Debian's prometheus package, which
  // deploy/install_deps.sh --tests installs).
  const std::string file = MakeTempDir("metrics") + "/metrics.txt";
  std::ofstream(file) << after;
  const ProcessResult lint =
      RunProcess({"/bin/sh", "-c", "promtool check metrics < '" + file + "'"});
  EXPECT_EQ(lint.exit_code, 0) << lint.out << lint.err;
}

TEST_F(HttpApiTest, WatchSendsTheMatrixAndAnUpdateAfterANewBatch) {
  CreateAndFill("s", 1);
  EventReader reader(http_port(),
                     "/api/v1/sessions/s/watch?measure=lin&min_interval_ms=50");
  ASSERT_EQ(reader.Status(), 200) << reader.Text();
  EXPECT_EQ(reader.Header("Content-Type"), "text/event-stream");
  EXPECT_EQ(reader.Header("Cache-Control"), "no-cache");
  EXPECT_EQ(reader.Header("Content-Encoding"), "");  // never compressed
  std::vector<Event> events = reader.WaitForMoreThan(0);
  ASSERT_GE(events.size(), 1u) << reader.Text();
  ASSERT_EQ(events[0].event, "matrix");
  v1::GetSimilarityRequest query;
  query.set_session_id("s");
  query.set_measure("lin");
  absl::StatusOr<v1::SimilarityMatrix> before = client_->GetSimilarity(query);
  ASSERT_TRUE(before.ok());
  ExpectSameMatrix(FromJson<v1::SimilarityMatrix>(events[0].data), *before);

  // A new batch of every stream: each entry counts one more batch.
  ASSERT_TRUE(StreamOne("s", "a", {"l1", "l2"}, "new").empty());
  ASSERT_TRUE(StreamOne("s", "b", {"m1"}, "new").empty());
  absl::StatusOr<v1::SimilarityMatrix> after = client_->GetSimilarity(query);
  ASSERT_TRUE(after.ok());
  ASSERT_NE(after->batches(0), before->batches(0));
  // The watch may send matrices before the batch is complete; the update
  // that shows all of it comes.
  v1::SimilarityMatrix last;
  for (size_t seen = 1;; ++seen) {
    events = reader.WaitForMoreThan(seen - 1);
    ASSERT_GE(events.size(), seen) << "no update: " << reader.Text();
    ASSERT_EQ(events[seen - 1].event, "matrix") << events[seen - 1].data;
    last = FromJson<v1::SimilarityMatrix>(events[seen - 1].data);
    // Matrices between a's and b's parts of the batch count it in part.
    if (std::equal(last.batches().begin(), last.batches().end(),
                   after->batches().begin(), after->batches().end())) {
      break;
    }
  }
  ExpectSameMatrix(last, *after);

  // Deleting the session ends the stream with the watch's error.
  ASSERT_TRUE(client_->DeleteSession("s").ok());
  for (;;) {
    events = reader.WaitForMoreThan(events.size());
    ASSERT_FALSE(events.empty());
    if (events.back().event != "matrix") break;
  }
  EXPECT_EQ(events.back().event, "error");
  EXPECT_EQ(nlohmann::json::parse(events.back().data).value("code", ""),
            "NOT_FOUND")
      << events.back().data;
}

TEST_F(HttpApiTest, WatchErrorsBeforeTheFirstMatrixAreHttpStatuses) {
  CreateAndFill("s", 1);
  ExpectError(Get(http_port(), "/api/v1/sessions/nope/watch"), 404, "NOT_FOUND",
              "nope");
  ExpectError(Get(http_port(), "/api/v1/sessions/s/watch?measure=cosine"), 404,
              "NOT_FOUND", "cosine");
  ExpectError(Get(http_port(), "/api/v1/sessions/s/watch?min_interval_ms=1e3"),
              400, "INVALID_ARGUMENT", "min_interval_ms='1e3'");
  ExpectError(Get(http_port(), "/api/v1/sessions/s/watch?step_min=-5"), 400,
              "INVALID_ARGUMENT", "step_min");
}

TEST_F(HttpApiTest, EventStreamsBeyondTheLimitAre429AndCkadServesOn) {
  CreateAndFill("s", 1);
  const std::string path = "/api/v1/sessions/s/watch";
  std::vector<std::unique_ptr<EventReader>> readers;
  for (int i = 0; i < server::HttpServer::kMaxEventStreams; ++i) {
    readers.push_back(std::make_unique<EventReader>(http_port(), path));
    ASSERT_EQ(readers.back()->Status(), 200);
    ASSERT_FALSE(readers.back()->WaitForMoreThan(0).empty());
  }
  ExpectError(Get(http_port(), path), 429, "RESOURCE_EXHAUSTED",
              "event streams are open");
  // Other requests still have workers.
  httplib::Result listed = Get(http_port(), "/api/v1/sessions");
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->status, 200);
  // A client that goes frees its stream (noticed within a tick): a new one
  // is served.
  readers.back()->Stop();
  readers.pop_back();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  int status = 0;
  while (absl::Now() < deadline) {
    httplib::Client http("127.0.0.1", http_port());
    httplib::Result r = http.Get(
        path,
        [&](const httplib::Response& response) {
          status = response.status;
          return status != 200;  // stop at the headers of a stream
        },
        [](const char*, size_t) { return true; });
    if (status == 200) break;
    ASSERT_EQ(status, 429);
    absl::SleepFor(absl::Milliseconds(100));  // poll interval, not a sync
  }
  EXPECT_EQ(status, 200);
}

TEST_F(HttpApiTest, ShutdownEndsEventStreamsWithAnErrorEvent) {
  CreateAndFill("s", 1);
  EventReader reader(http_port(), "/api/v1/sessions/s/watch");
  ASSERT_EQ(reader.Status(), 200);
  ASSERT_FALSE(reader.WaitForMoreThan(0).empty());
  server_->Shutdown();
  std::vector<Event> events = reader.WaitForMoreThan(1);
  ASSERT_GE(events.size(), 2u) << reader.Text();
  EXPECT_EQ(events.back().event, "error");
  EXPECT_NE(events.back().data.find("UNAVAILABLE"), std::string::npos)
      << events.back().data;
}

class HttpApiDurableTest : public HttpApiTest {
 protected:
  std::string DataDir() override { return MakeTestDataDir(); }
};

TEST_F(HttpApiDurableTest, GroupCommitsAreMeasured) {
  const std::string before = MetricsText();
  EXPECT_EQ(MetricValue(before, "ckad_group_commit_batches_count"), 0);
  CreateAndFill("s", 2);  // 3 batches, and the creation, wait for commits
  const std::string after = MetricsText();
  EXPECT_GT(MetricValue(after, "ckad_group_commit_batches_count"), 0);
  EXPECT_EQ(MetricValue(after, "ckad_group_commit_batches_count"),
            MetricValue(after, "ckad_group_commit_seconds_count"));
  // The OK acks and the creation waited for commits; one whose change an
  // earlier round wrote is answered by a round without a write (not counted).
  EXPECT_GT(MetricValue(after, "ckad_group_commit_batches_sum"), 0);
  EXPECT_LE(MetricValue(after, "ckad_group_commit_batches_sum"), 4);
  EXPECT_EQ(MetricValue(after, "ckad_batches_total", {"outcome=\"applied\""}),
            3);
}

class HttpAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = MakeTempDir("http_auth");
    std::ofstream(dir + "/tokens") << kReaderToken << " reader\n"
                                   << kWriterToken << " writer\n";
    server::ServerOptions options;
    options.auth_tokens_file = dir + "/tokens";
    options.http_listen = "127.0.0.1:0";
    server_ = StartServer(options);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }
  std::unique_ptr<server::Server> server_;
};

TEST_F(HttpAuthTest, TheApiNeedsTheSameTokensAsGrpc) {
  const int port = server_->http_port();
  for (const std::string path : {"/api/v1/sessions", "/api/v1/sessions/s",
                                 "/api/v1/sessions/s/similarity"}) {
    SCOPED_TRACE(path);
    ExpectError(Get(port, path), 401, "UNAUTHENTICATED", "");
    ExpectError(Get(port, path, "wrong-token-0123456789abcdef"), 401,
                "UNAUTHENTICATED", "");
  }
  httplib::Result listed = Get(port, "/api/v1/sessions", kReaderToken);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->status, 200) << listed->body;
  ExpectError(Get(port, "/api/v1/sessions/s", kReaderToken), 404, "NOT_FOUND",
              "'s'");
  // A reader can read but not create: creation is gRPC's, where the reader's
  // role is refused.
  client::ClientOptions reader;
  reader.server = absl::StrCat("127.0.0.1:", server_->port());
  reader.bearer_token = kReaderToken;
  absl::StatusOr<std::unique_ptr<client::Client>> c =
      client::Client::Create(reader);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->CreateSession("s", {}).status().code(),
            absl::StatusCode::kPermissionDenied);
  // /metrics too needs a reader's token.
  ExpectError(Get(port, "/metrics"), 401, "UNAUTHENTICATED", "");
  httplib::Result metrics = Get(port, "/metrics", kReaderToken);
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  // Without a token the health check still answers.
  httplib::Result health = Get(port, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST(HttpTlsTest, HttpsServesWithTheGrpcCertificateAndNoPlaintext) {
  const std::string dir = MakeTempDir("http_tls");
  const ProcessResult made =
      RunProcess({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048",
                  "-nodes", "-keyout", dir + "/key.pem", "-out",
                  dir + "/cert.pem", "-days", "1", "-subj", "/CN=localhost",
                  "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  server::ServerOptions options;
  options.tls_cert_file = dir + "/cert.pem";
  options.tls_key_file = dir + "/key.pem";
  options.http_listen = "127.0.0.1:0";
  std::unique_ptr<server::Server> server = StartServer(options);
  ASSERT_NE(server, nullptr);

  httplib::SSLClient https("127.0.0.1", server->http_port());
  https.set_ca_cert_path((dir + "/cert.pem").c_str());
  https.enable_server_certificate_verification(true);
  httplib::Result listed = https.Get("/api/v1/sessions");
  ASSERT_TRUE(listed) << httplib::to_string(listed.error());
  EXPECT_EQ(listed->status, 200);
  EXPECT_EQ(listed->body, "{\"sessions\":[]}");
  httplib::Client plain("127.0.0.1", server->http_port());
  httplib::Result refused = plain.Get("/healthz");
  EXPECT_FALSE(refused && refused->status == 200);
  server->Shutdown();
}

TEST(HttpStatusTest, GrpcCodesMapAsGooglesHttpMapping) {
  const std::vector<std::pair<grpc::StatusCode, int>> cases = {
      {grpc::StatusCode::OK, 200},
      {grpc::StatusCode::CANCELLED, 499},
      {grpc::StatusCode::UNKNOWN, 500},
      {grpc::StatusCode::INVALID_ARGUMENT, 400},
      {grpc::StatusCode::DEADLINE_EXCEEDED, 504},
      {grpc::StatusCode::NOT_FOUND, 404},
      {grpc::StatusCode::ALREADY_EXISTS, 409},
      {grpc::StatusCode::PERMISSION_DENIED, 403},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, 429},
      {grpc::StatusCode::FAILED_PRECONDITION, 400},
      {grpc::StatusCode::ABORTED, 409},
      {grpc::StatusCode::OUT_OF_RANGE, 400},
      {grpc::StatusCode::UNIMPLEMENTED, 501},
      {grpc::StatusCode::INTERNAL, 500},
      {grpc::StatusCode::UNAVAILABLE, 503},
      {grpc::StatusCode::DATA_LOSS, 500},
      {grpc::StatusCode::UNAUTHENTICATED, 401}};
  for (const auto& [code, status] : cases) {
    EXPECT_EQ(server::HttpStatusOf(code), status) << code;
  }
  // A message that is not UTF-8 still makes valid JSON.
  const nlohmann::json body = nlohmann::json::parse(
      server::ErrorJson(grpc::StatusCode::NOT_FOUND, "id '\xff\"'"));
  EXPECT_EQ(body["code"], "NOT_FOUND");
  EXPECT_EQ(body["message"], "id '\xef\xbf\xbd\"'");
}

TEST(HttpStartTest, ANonLoopbackHttpAddressNeedsTheSameSecurityAsGrpc) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.http_listen = "0.0.0.0:0";
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find("--http-listen '0.0.0.0:0'"),
            std::string::npos)
      << server.status();
  options.http_listen = "127.0.0.1:x";
  server = server::Server::BuildAndStart(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("--http-listen"), std::string::npos)
      << server.status();
}

// block_threshold and block_share: the blocks gRPC answers, as JSON, and the
// service's errors as 400 with its message.
TEST_F(HttpApiTest, SimilarityCarriesGrpcsBlocks) {
  CreateAndFill("s", 4);
  v1::GetSimilarityRequest pair;
  pair.set_session_id("s");
  pair.add_rows("a/l1");
  pair.add_cols("a/l2");
  absl::StatusOr<v1::SimilarityMatrix> value = client_->GetSimilarity(pair);
  ASSERT_TRUE(value.ok()) << value.status();
  const double v = value->values(0);
  ASSERT_GT(v, 0.05) << "a/l2 is built from a/l1";
  // Just below the pair's value: a/l1 .. a/l2 is a block of 2 of a's 2 layers.
  const double threshold = std::floor(v * 100) / 100;
  v1::GetSimilarityRequest grpc_request;
  grpc_request.set_session_id("s");
  grpc_request.add_rows("b/m1");
  grpc_request.set_block_threshold(threshold);
  grpc_request.set_block_warn_share(1.0);
  absl::StatusOr<v1::SimilarityMatrix> grpc =
      client_->GetSimilarity(grpc_request);
  ASSERT_TRUE(grpc.ok()) << grpc.status();
  ASSERT_EQ(grpc->blocks_size(), 1) << grpc->DebugString();
  EXPECT_EQ(grpc->blocks(0).first_stream(), "a/l1");
  EXPECT_FALSE(grpc->blocks(0).warning()) << "2 of 2 is not past a share of 1";
  httplib::Result http =
      Get(http_port(), absl::StrCat("/api/v1/sessions/s/similarity?rows=b%2Fm1"
                                    "&block_threshold=",
                                    threshold, "&block_share=1"));
  ASSERT_TRUE(http);
  ASSERT_EQ(http->status, 200) << http->body;
  const v1::SimilarityMatrix from_http =
      FromJson<v1::SimilarityMatrix>(http->body);
  ExpectSameMatrix(from_http, *grpc);
  ASSERT_EQ(from_http.blocks_size(), 1);
  EXPECT_EQ(from_http.blocks(0).SerializeAsString(),
            grpc->blocks(0).SerializeAsString())
      << from_http.blocks(0).DebugString();
  const nlohmann::json raw = nlohmann::json::parse(http->body);
  EXPECT_EQ(raw["blocks"][0]["last_stream"], "a/l2") << http->body;
  // Without block_threshold the answer has no blocks.
  http = Get(http_port(), "/api/v1/sessions/s/similarity?block_share=1");
  ASSERT_TRUE(http);
  EXPECT_EQ(FromJson<v1::SimilarityMatrix>(http->body).blocks_size(), 0);

  // Out of range: the service's message; not a number: the parameter's.
  grpc_request.set_block_threshold(1.5);
  const absl::Status grpc_bad = client_->GetSimilarity(grpc_request).status();
  ASSERT_EQ(grpc_bad.code(), absl::StatusCode::kInvalidArgument);
  ExpectError(
      Get(http_port(), "/api/v1/sessions/s/similarity?block_threshold=1.5"),
      400, "INVALID_ARGUMENT", std::string(grpc_bad.message()));
  ExpectError(Get(http_port(),
                  "/api/v1/sessions/s/similarity?block_threshold=0.9"
                  "&block_share=0"),
              400, "INVALID_ARGUMENT", "block_warn_share 0");
  ExpectError(
      Get(http_port(), "/api/v1/sessions/s/similarity?block_threshold=high"),
      400, "INVALID_ARGUMENT", "block_threshold='high'");
  ExpectError(Get(http_port(),
                  "/api/v1/sessions/s/similarity?block_threshold=0.9"
                  "&block_threshold=0.8"),
              400, "INVALID_ARGUMENT", "block_threshold");
}

// The JSON of a matrix, a series or a watch event is drawn from the memory
// budget while it is built and sent: a budget too small for it answers 429
// naming the budget and the JSON, and once the answers are sent nothing stays
// reserved.
TEST_F(HttpApiTest, AnswerJsonIsHeldInTheMemoryBudgetUntilSent) {
  CreateAndFill("s", 4);
  const std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                          grpc::InsecureChannelCredentials());
  const std::vector<std::string> paths = {
      "/api/v1/sessions/s/similarity",
      "/api/v1/sessions/s/series?row=a%2Fl1&col=a%2Fl2"};
  for (const int64_t limit : {int64_t{512}, int64_t{0}}) {
    SCOPED_TRACE(absl::StrCat("budget limit ", limit, " (0: counting only)"));
    auto budget =
        std::make_shared<core::MemoryBudget>(limit, "the test's budget");
    server::HttpServerOptions options;
    options.listen = "127.0.0.1:0";
    options.memory = budget;
    absl::StatusOr<std::unique_ptr<server::HttpServer>> http =
        server::HttpServer::Start(options, channel);
    ASSERT_TRUE(http.ok()) << http.status();
    for (const std::string& path : paths) {
      SCOPED_TRACE(path);
      httplib::Result got = Get((*http)->port(), path);
      ASSERT_TRUE(got);
      if (limit > 0) {
        EXPECT_EQ(got->status, 429) << got->body;
        EXPECT_NE(got->body.find("the test's budget"), std::string::npos)
            << got->body;
        EXPECT_NE(got->body.find("JSON"), std::string::npos) << got->body;
      } else {
        EXPECT_EQ(got->status, 200) << got->body;
      }
    }
    if (limit > 0) {
      // A watch's first event is refused the same way (a later one ends the
      // stream with the same error event).
      httplib::Result watch = Get((*http)->port(), "/api/v1/sessions/s/watch");
      ASSERT_TRUE(watch);
      EXPECT_EQ(watch->status, 429) << watch->body;
      EXPECT_NE(watch->body.find("the JSON of a watch event"),
                std::string::npos)
          << watch->body;
    }
    (*http)->Stop();  // joins the workers: every response is destroyed
    EXPECT_EQ(budget->used(), 0);
  }
}

}  // namespace
}  // namespace cka::testing
