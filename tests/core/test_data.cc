#include "test_data.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace cka::core::testing {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double HalfToDouble(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double value;
  if (exponent == 0) {
    value = std::ldexp(mantissa, -24);
  } else if (exponent == 31) {
    value = mantissa ? kNaN : std::numeric_limits<double>::infinity();
  } else {
    value = std::ldexp(mantissa + 1024, exponent - 25);
  }
  return sign ? -value : value;
}

double BFloat16ToDouble(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

DType ParseDType(const std::string& name) {
  if (name == "float32") return DType::kFloat32;
  if (name == "float64") return DType::kFloat64;
  if (name == "float16") return DType::kFloat16;
  if (name == "bfloat16") return DType::kBFloat16;
  std::cerr << "unknown dtype " << name << "\n";
  std::abort();
}

Measure ParseMeasure(const nlohmann::json& j) {
  Measure m;
  m.name = j.at("name").get<std::string>();
  m.kernel = j.at("kernel").get<std::string>() == "rbf" ? Kernel::kRbf
                                                        : Kernel::kLinear;
  m.rbf_threshold = j.at("threshold").get<double>();
  const std::string e = j.at("estimator").get<std::string>();
  m.estimator = e == "unbiased" ? Estimator::kUnbiased
                : e == "biased" ? Estimator::kBiased
                : e == "exact"  ? Estimator::kExact
                                : Estimator::kExactDebiased;
  return m;
}

Expected ParseExpected(const nlohmann::json& j) {
  Expected e;
  for (const auto& v : j.at("values"))
    e.values.push_back(v.is_null() ? kNaN : v.get<double>());
  for (const auto& b : j.at("batches")) e.batches.push_back(b.get<int64_t>());
  return e;
}

LayerData ParseLayer(const StreamSpec& spec, int64_t n,
                     const nlohmann::json& j) {
  LayerData layer;
  layer.stream = spec.name;
  layer.dtype = spec.dtype;
  layer.shape.push_back(n);
  for (int64_t s : spec.trailing_shape) layer.shape.push_back(s);
  const int64_t d = spec.width;
  const size_t count = static_cast<size_t>(n * d);
  if (j.contains("b64")) {
    layer.bytes = Base64Decode(j.at("b64").get<std::string>());
  } else {
    const auto& values = j.at("values");
    for (const auto& v : values) {
      if (spec.dtype == DType::kFloat64) {
        const double x = v.get<double>();
        const auto* p = reinterpret_cast<const uint8_t*>(&x);
        layer.bytes.insert(layer.bytes.end(), p, p + sizeof x);
      } else {
        const uint16_t bits = v.get<uint16_t>();
        layer.bytes.push_back(static_cast<uint8_t>(bits & 0xff));
        layer.bytes.push_back(static_cast<uint8_t>(bits >> 8));
      }
    }
  }
  if (layer.bytes.size() != count * DTypeSize(spec.dtype)) {
    std::cerr << "bad test data for " << spec.name << "\n";
    std::abort();
  }
  layer.x.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = layer.bytes.data() + i * DTypeSize(spec.dtype);
    switch (spec.dtype) {
      case DType::kFloat64:
        std::memcpy(&layer.x[i], p, 8);
        break;
      case DType::kFloat32: {
        float f;
        std::memcpy(&f, p, 4);
        layer.x[i] = f;
        break;
      }
      case DType::kFloat16:
        layer.x[i] = HalfToDouble(static_cast<uint16_t>(p[0] | (p[1] << 8)));
        break;
      case DType::kBFloat16:
        layer.x[i] =
            BFloat16ToDouble(static_cast<uint16_t>(p[0] | (p[1] << 8)));
        break;
    }
  }
  layer.gram.assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < n; ++b) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k)
        s += layer.x[a * d + k] * layer.x[b * d + k];
      layer.gram[a * n + b] = s;
    }
  }
  return layer;
}

Scenario ParseScenario(const nlohmann::json& j) {
  Scenario s;
  for (const auto& js : j.at("streams")) {
    StreamSpec spec;
    spec.name = js.at("name").get<std::string>();
    spec.source = js.at("source").get<std::string>();
    spec.layer = js.at("layer").get<std::string>();
    spec.dtype = ParseDType(js.at("dtype").get<std::string>());
    spec.trailing_shape = js.at("trailing_shape").get<std::vector<int64_t>>();
    spec.width = 1;
    for (int64_t t : spec.trailing_shape) spec.width *= t;
    s.streams.push_back(spec);
  }
  for (const auto& jb : j.at("batches")) {
    BatchData b;
    b.batch_id = jb.at("batch_id").get<std::string>();
    b.step = jb.at("step").get<int64_t>();
    b.n = jb.at("n").get<int64_t>();
    for (const StreamSpec& spec : s.streams) {
      if (jb.at("layers").contains(spec.name)) {
        b.layers.push_back(
            ParseLayer(spec, b.n, jb.at("layers").at(spec.name)));
      }
    }
    s.batches.push_back(std::move(b));
  }
  for (const auto& jm : j.at("measures"))
    s.measures.push_back(ParseMeasure(jm));
  s.declared = j.at("declared").get<bool>();
  s.step_bucket = j.at("step_bucket").get<int64_t>();
  if (j.contains("stream_widths")) {
    s.stream_widths = j.at("stream_widths").get<std::vector<int64_t>>();
  }
  for (const auto& [name, e] : j.at("expected").items())
    s.expected[name] = ParseExpected(e);
  for (const auto& jr : j.at("ranges")) {
    StepRange r;
    r.step_min = jr.at("step_min").get<int64_t>();
    r.step_max = jr.at("step_max").get<int64_t>();
    for (const auto& [name, e] : jr.at("expected").items())
      r.expected[name] = ParseExpected(e);
    s.ranges.push_back(std::move(r));
  }
  return s;
}

}  // namespace

const nlohmann::json& LoadJson(const std::string& name) {
  static std::mutex mu;
  static auto* cache =
      new std::map<std::string, std::unique_ptr<nlohmann::json>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*cache)[name];
  if (!slot) {
    const std::string path = absl::StrCat(CKA_TEST_DATA_DIR, "/", name);
    std::ifstream in(path);
    if (!in) {
      std::cerr << "cannot open test data " << path
                << " (run tests/core/data/make_vectors.py)\n";
      std::abort();
    }
    slot = std::make_unique<nlohmann::json>(nlohmann::json::parse(in));
  }
  return *slot;
}

uint64_t Bits(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}

std::vector<uint8_t> Base64Decode(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

TensorView LayerData::Activations() const {
  return TensorView{shape, dtype, bytes.data(), bytes.size()};
}

TensorView LayerData::Gram() const {
  return TensorView{{shape[0], shape[0]},
                    DType::kFloat64,
                    gram.data(),
                    gram.size() * sizeof(double)};
}

std::vector<std::string> Scenario::StreamNames() const {
  std::vector<std::string> names;
  for (const StreamSpec& s : streams) names.push_back(s.name);
  return names;
}

const StreamSpec& Scenario::Stream(const std::string& name) const {
  for (const StreamSpec& s : streams) {
    if (s.name == name) return s;
  }
  std::cerr << "no stream " << name << "\n";
  std::abort();
}

SessionConfig Scenario::Config() const {
  SessionConfig config;
  config.measures = measures;
  if (declared) config.streams = StreamNames();
  config.step_bucket = step_bucket;
  return config;
}

const Scenario& LoadScenario(const std::string& name) {
  static std::mutex mu;
  static auto* cache = new std::map<std::string, std::unique_ptr<Scenario>>();
  const nlohmann::json& j = LoadJson(name);
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*cache)[name];
  if (!slot) slot = std::make_unique<Scenario>(ParseScenario(j));
  return *slot;
}

std::vector<BatchInput> MessagesPerSource(const Scenario& scenario,
                                          const BatchData& batch,
                                          bool as_gram) {
  std::vector<BatchInput> messages;
  for (const LayerData& layer : batch.layers) {
    const StreamSpec& spec = scenario.Stream(layer.stream);
    BatchInput* message = nullptr;
    for (BatchInput& m : messages) {
      if (m.source == spec.source) message = &m;
    }
    if (message == nullptr) {
      messages.push_back(
          BatchInput{spec.source, batch.batch_id, batch.step, {}});
      message = &messages.back();
    }
    LayerInput in;
    in.layer = spec.layer;
    in.kind =
        as_gram ? LayerInput::Kind::kGram : LayerInput::Kind::kActivations;
    in.tensor = as_gram ? layer.Gram() : layer.Activations();
    message->layers.push_back(in);
  }
  return messages;
}

std::vector<BatchInput> MessagesPerLayer(const Scenario& scenario,
                                         const BatchData& batch) {
  std::vector<BatchInput> messages;
  for (const LayerData& layer : batch.layers) {
    const StreamSpec& spec = scenario.Stream(layer.stream);
    LayerInput in;
    in.layer = spec.layer;
    in.tensor = layer.Activations();
    messages.push_back(
        BatchInput{spec.source, batch.batch_id, batch.step, {in}});
  }
  return messages;
}

void IngestAll(Session& session, const Scenario& scenario, bool as_gram) {
  for (const BatchData& batch : scenario.batches) {
    for (const BatchInput& message :
         MessagesPerSource(scenario, batch, as_gram)) {
      const absl::StatusOr<IngestResult> result = session.Ingest(message);
      ASSERT_TRUE(result.ok()) << "batch " << batch.batch_id << " source '"
                               << message.source << "': " << result.status();
    }
  }
}

std::unique_ptr<Session> SessionWithAll(const Scenario& scenario, bool as_gram,
                                        SessionLimits limits) {
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Create(scenario.Config(), limits);
  EXPECT_TRUE(session.ok()) << session.status();
  if (!session.ok()) return nullptr;
  IngestAll(**session, scenario, as_gram);
  return *std::move(session);
}

SimilarityQuery FullQuery(const Scenario& scenario,
                          const std::string& measure) {
  SimilarityQuery query;
  query.measure = measure;
  query.rows = scenario.StreamNames();
  query.cols = scenario.StreamNames();
  return query;
}

SimilarityQuery QueryOf(const std::string& measure,
                        std::vector<std::string> rows,
                        std::vector<std::string> cols) {
  SimilarityQuery q;
  q.measure = measure;
  q.rows = std::move(rows);
  q.cols = std::move(cols);
  return q;
}

SimilarityMatrix QueryOrDie(const Session& session,
                            const SimilarityQuery& query) {
  absl::StatusOr<SimilarityMatrix> result = session.Query(query);
  EXPECT_TRUE(result.ok()) << "measure '" << query.measure
                           << "': " << result.status();
  return result.ok() ? *std::move(result) : SimilarityMatrix{};
}

void ExpectMatrixNear(const SimilarityMatrix& got, const Expected& want,
                      double rel_tol, double abs_tol,
                      const std::string& context) {
  ASSERT_EQ(got.values.size(), want.values.size()) << context;
  ASSERT_EQ(got.batches.size(), want.batches.size()) << context;
  const size_t cols = got.cols.size();
  for (size_t i = 0; i < want.values.size(); ++i) {
    const std::string where = absl::StrCat(
        context, " entry (", got.rows[i / cols], ", ", got.cols[i % cols], ")");
    EXPECT_EQ(got.batches[i], want.batches[i]) << where;
    if (std::isnan(want.values[i])) {
      EXPECT_TRUE(std::isnan(got.values[i])) << where << ": " << got.values[i];
    } else {
      EXPECT_NEAR(got.values[i], want.values[i],
                  abs_tol + rel_tol * std::abs(want.values[i]))
          << where;
    }
  }
}

void ExpectMatricesIdentical(const SimilarityMatrix& a,
                             const SimilarityMatrix& b,
                             const std::string& context) {
  EXPECT_EQ(a.measure, b.measure) << context;
  EXPECT_EQ(a.rows, b.rows) << context;
  EXPECT_EQ(a.cols, b.cols) << context;
  EXPECT_EQ(a.batches, b.batches) << context;
  ASSERT_EQ(a.values.size(), b.values.size()) << context;
  for (size_t i = 0; i < a.values.size(); ++i) {
    EXPECT_EQ(std::memcmp(&a.values[i], &b.values[i], sizeof(double)), 0)
        << context << " entry " << i << ": " << a.values[i] << " vs "
        << b.values[i];
  }
}

void ExpectMatricesNear(const SimilarityMatrix& a, const SimilarityMatrix& b,
                        double rel_tol, const std::string& context) {
  EXPECT_EQ(a.rows, b.rows) << context;
  EXPECT_EQ(a.cols, b.cols) << context;
  EXPECT_EQ(a.batches, b.batches) << context;
  ASSERT_EQ(a.values.size(), b.values.size()) << context;
  for (size_t i = 0; i < a.values.size(); ++i) {
    if (std::isnan(a.values[i]) || std::isnan(b.values[i])) {
      EXPECT_EQ(std::isnan(a.values[i]), std::isnan(b.values[i]))
          << context << " entry " << i << ": " << a.values[i] << " vs "
          << b.values[i];
      continue;
    }
    const double scale =
        std::max({1.0, std::abs(a.values[i]), std::abs(b.values[i])});
    EXPECT_NEAR(a.values[i], b.values[i], rel_tol * scale)
        << context << " entry " << i;
  }
}

std::vector<SimilarityMatrix> AllAnswers(const Session& session,
                                         const Scenario& scenario) {
  std::vector<SimilarityMatrix> answers;
  for (const Measure& m : scenario.measures) {
    answers.push_back(QueryOrDie(session, FullQuery(scenario, m.name)));
    if (IsExact(m.estimator)) continue;
    for (const StepRange& r : scenario.ranges) {
      SimilarityQuery q = FullQuery(scenario, m.name);
      q.step_min = r.step_min;
      q.step_max = r.step_max;
      answers.push_back(QueryOrDie(session, q));
    }
  }
  return answers;
}

LayerInput DoubleLayer(const std::string& layer, int64_t n, int64_t d,
                       const std::vector<double>& storage) {
  LayerInput in;
  in.layer = layer;
  in.tensor = TensorView{
      {n, d}, DType::kFloat64, storage.data(), storage.size() * sizeof(double)};
  return in;
}

}  // namespace cka::core::testing
