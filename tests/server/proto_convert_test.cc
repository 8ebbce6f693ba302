#include "server/proto_convert.h"

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

using google::protobuf::util::MessageDifferencer;

v1::Tensor FloatTensor(std::vector<int64_t> shape, size_t floats) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(v1::FLOAT32);
  t.set_data(std::string(floats * sizeof(float), '\0'));
  return t;
}

std::string MessageOf(const absl::Status& status) {
  return std::string(status.message());
}

TEST(ProtoConvertTest, SessionConfigRoundTripsThroughCore) {
  v1::SessionConfig proto;
  v1::Measure* rbf = proto.add_measures();
  rbf->set_name("rbf04");
  rbf->set_kernel(v1::RBF);
  rbf->set_rbf_threshold(0.4);
  rbf->set_estimator(v1::BIASED);
  v1::Measure* exact = proto.add_measures();
  exact->set_name("exact");
  exact->set_kernel(v1::LINEAR);
  exact->set_estimator(v1::EXACT_DEBIASED);
  proto.add_streams("a/conv1");
  proto.add_streams("b/fc");
  proto.add_stream_widths(64);
  proto.add_stream_widths(0);
  proto.set_step_bucket(100);

  absl::StatusOr<core::SessionConfig> config = SessionConfigFromProto(proto);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->measures.size(), 2u);
  EXPECT_EQ(config->measures[0].kernel, core::Kernel::kRbf);
  EXPECT_EQ(config->measures[0].rbf_threshold, 0.4);
  EXPECT_EQ(config->measures[0].estimator, core::Estimator::kBiased);
  EXPECT_EQ(config->measures[1].estimator, core::Estimator::kExactDebiased);
  EXPECT_EQ(config->streams, (std::vector<std::string>{"a/conv1", "b/fc"}));
  EXPECT_EQ(config->stream_widths, (std::vector<int64_t>{64, 0}));
  EXPECT_EQ(config->step_bucket, 100);

  v1::SessionConfig back;
  SessionConfigToProto(*config, &back);
  EXPECT_TRUE(MessageDifferencer::Equals(back, proto)) << back.DebugString();
}

TEST(ProtoConvertTest, UnspecifiedKernelAndEstimatorAreLinearAndUnbiased) {
  v1::SessionConfig proto;
  proto.add_measures()->set_name("m");
  absl::StatusOr<core::SessionConfig> config = SessionConfigFromProto(proto);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->measures[0].kernel, core::Kernel::kLinear);
  EXPECT_EQ(config->measures[0].estimator, core::Estimator::kUnbiased);
}

TEST(ProtoConvertTest, UnknownEnumValuesAreInvalidArgumentNamingTheField) {
  v1::SessionConfig bad_kernel;
  bad_kernel.add_measures()->set_name("ok");
  bad_kernel.add_measures()->set_kernel(static_cast<v1::Kernel>(9));
  absl::Status status = SessionConfigFromProto(bad_kernel).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(MessageOf(status).find("config.measures[1].kernel: 9"),
            std::string::npos)
      << status;

  v1::SessionConfig bad_estimator;
  bad_estimator.add_measures()->set_estimator(static_cast<v1::Estimator>(-2));
  status = SessionConfigFromProto(bad_estimator).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(MessageOf(status).find("config.measures[0].estimator: -2"),
            std::string::npos)
      << status;
}

TEST(ProtoConvertTest, MeasureKindsConvertBothWaysAndDefaultToExact) {
  const std::pair<v1::MeasureKind, core::MeasureKind> kinds[] = {
      {v1::CCA_R2, core::MeasureKind::kCcaR2},
      {v1::CCA_MEAN_RHO, core::MeasureKind::kCcaMeanRho},
      {v1::SVCCA, core::MeasureKind::kSvcca},
      {v1::PWCCA, core::MeasureKind::kPwcca},
      {v1::REGRESSION_R2, core::MeasureKind::kRegressionR2},
      {v1::PROCRUSTES, core::MeasureKind::kProcrustes}};
  v1::SessionConfig proto;
  for (const auto& [kind, _] : kinds) {
    v1::Measure* m = proto.add_measures();
    m->set_name(v1::MeasureKind_Name(kind));
    m->set_kind(kind);
  }
  proto.add_measures()->set_name("cka");  // unspecified: CKA, UNBIASED
  absl::StatusOr<core::SessionConfig> config = SessionConfigFromProto(proto);
  ASSERT_TRUE(config.ok()) << config.status();
  for (size_t i = 0; i < std::size(kinds); ++i) {
    EXPECT_EQ(config->measures[i].kind, kinds[i].second) << i;
    EXPECT_EQ(config->measures[i].estimator, core::Estimator::kExact) << i;
  }
  EXPECT_EQ(config->measures.back().kind, core::MeasureKind::kCka);
  EXPECT_EQ(config->measures.back().estimator, core::Estimator::kUnbiased);
  v1::SessionConfig back;
  SessionConfigToProto(*config, &back);
  for (size_t i = 0; i < std::size(kinds); ++i) {
    EXPECT_EQ(back.measures(i).kind(), kinds[i].first) << i;
    EXPECT_EQ(back.measures(i).estimator(), v1::EXACT) << i;
  }
  EXPECT_EQ(back.measures(std::size(kinds)).kind(),
            v1::MEASURE_KIND_UNSPECIFIED);

  v1::SessionConfig bad;
  bad.add_measures()->set_kind(static_cast<v1::MeasureKind>(42));
  const absl::Status status = SessionConfigFromProto(bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(MessageOf(status).find("config.measures[0].kind: 42"),
            std::string::npos)
      << status;
}

TEST(ProtoConvertTest, MatrixCarriesTheNote) {
  core::SimilarityMatrix matrix;
  matrix.measure = "reg";
  matrix.note = "1 of 4 entries have no value (NaN)";
  v1::SimilarityMatrix proto;
  SimilarityMatrixToProto("s", matrix, &proto);
  EXPECT_EQ(proto.note(), matrix.note);
}

TEST(ProtoConvertTest, BatchIsAViewOverTheProtoBytes) {
  v1::ActivationBatch batch;
  batch.set_session_id("s");
  batch.set_source("model-a");
  batch.set_batch_id("e1/17");
  batch.set_step(42);
  v1::LayerActivation* conv = batch.add_layers();
  conv->set_layer("conv1");
  *conv->mutable_activations() = FloatTensor({8, 2, 3}, 48);
  v1::LayerActivation* gram = batch.add_layers();
  gram->set_layer("fc");
  *gram->mutable_gram() = FloatTensor({8, 8}, 64);
  gram->mutable_gram()->set_dtype(v1::FLOAT16);
  gram->mutable_gram()->set_data(std::string(64 * 2, '\0'));

  absl::StatusOr<core::BatchInput> input = BatchInputFromProto(batch);
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->source, "model-a");
  EXPECT_EQ(input->batch_id, "e1/17");
  EXPECT_EQ(input->step, 42);
  ASSERT_EQ(input->layers.size(), 2u);
  const core::LayerInput& l0 = input->layers[0];
  EXPECT_EQ(l0.layer, "conv1");
  EXPECT_EQ(l0.kind, core::LayerInput::Kind::kActivations);
  EXPECT_EQ(l0.tensor.shape, (std::vector<int64_t>{8, 2, 3}));
  EXPECT_EQ(l0.tensor.dtype, core::DType::kFloat32);
  // No copy: the view points at the proto's own bytes.
  EXPECT_EQ(l0.tensor.data, batch.layers(0).activations().data().data());
  EXPECT_EQ(l0.tensor.size_bytes, 48 * sizeof(float));
  const core::LayerInput& l1 = input->layers[1];
  EXPECT_EQ(l1.kind, core::LayerInput::Kind::kGram);
  EXPECT_EQ(l1.tensor.dtype, core::DType::kFloat16);
  EXPECT_EQ(l1.tensor.data, batch.layers(1).gram().data().data());
}

struct BadBatchCase {
  const char* name;
  void (*break_it)(v1::LayerActivation* layer);
  const char* message;  // a substring the error must contain
};

TEST(ProtoConvertTest, BadTensorsAreInvalidArgumentNamingLayerAndField) {
  const BadBatchCase cases[] = {
      {"dtype unspecified",
       [](v1::LayerActivation* l) {
         l->mutable_activations()->set_dtype(v1::DTYPE_UNSPECIFIED);
       },
       "layers[1] 'conv2'.activations.dtype: DTYPE_UNSPECIFIED"},
      {"dtype out of range",
       [](v1::LayerActivation* l) {
         l->mutable_activations()->set_dtype(static_cast<v1::DType>(17));
       },
       "activations.dtype: 17 is not a DType"},
      {"fewer bytes than the shape needs",
       [](v1::LayerActivation* l) {
         l->mutable_activations()->mutable_data()->resize(40);
       },
       "shape [4, 3] of float32 needs 48 bytes, but data has 40"},
      {"more bytes than the shape needs",
       [](v1::LayerActivation* l) {
         l->mutable_activations()->mutable_data()->append("x");
       },
       "needs 48 bytes, but data has 49"},
      {"gram with the wrong byte count",
       [](v1::LayerActivation* l) {
         *l->mutable_gram() = FloatTensor({4, 4}, 15);
       },
       "layers[1] 'conv2'.gram: shape [4, 4] of float32 needs 64 bytes, but "
       "data has 60"},
      {"empty shape",
       [](v1::LayerActivation* l) { l->mutable_activations()->clear_shape(); },
       "activations.shape: empty"},
      {"negative dimension",
       [](v1::LayerActivation* l) {
         l->mutable_activations()->set_shape(1, -3);
       },
       "activations.shape[1]: -3"},
      {"shape whose element count overflows",
       [](v1::LayerActivation* l) {
         l->mutable_activations()->set_shape(0, int64_t{1} << 40);
         l->mutable_activations()->set_shape(1, int64_t{1} << 40);
       },
       "more than 2^64"},
      {"payload oneof unset",
       [](v1::LayerActivation* l) { l->clear_payload(); },
       "layers[1] 'conv2'.payload: not set; expected activations or gram"},
  };
  for (const BadBatchCase& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ActivationBatch batch;
    for (const char* name : {"conv1", "conv2"}) {
      v1::LayerActivation* layer = batch.add_layers();
      layer->set_layer(name);
      *layer->mutable_activations() = FloatTensor({4, 3}, 12);
    }
    ASSERT_TRUE(BatchInputFromProto(batch).ok());
    c.break_it(batch.mutable_layers(1));
    absl::Status status = BatchInputFromProto(batch).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(MessageOf(status).find(c.message), std::string::npos) << status;
  }
}

TEST(ProtoConvertTest, QueryKeepsEmptyFieldsAndOptionalSteps) {
  v1::GetSimilarityRequest request;
  core::SimilarityQuery query = SimilarityQueryFromProto(request);
  EXPECT_EQ(query.measure, "");
  EXPECT_TRUE(query.rows.empty());
  EXPECT_TRUE(query.cols.empty());
  EXPECT_FALSE(query.step_min.has_value());
  EXPECT_FALSE(query.step_max.has_value());

  request.set_measure("rbf");
  request.add_rows("a/x");
  request.add_cols("b/y");
  request.add_cols("b/z");
  request.set_step_min(0);  // present and zero is not absent
  request.set_step_max(99);
  query = SimilarityQueryFromProto(request);
  EXPECT_EQ(query.measure, "rbf");
  EXPECT_EQ(query.rows, std::vector<std::string>{"a/x"});
  EXPECT_EQ(query.cols, (std::vector<std::string>{"b/y", "b/z"}));
  EXPECT_EQ(query.step_min, 0);
  EXPECT_EQ(query.step_max, 99);
}

TEST(ProtoConvertTest, MatrixKeepsLayoutAndNaN) {
  core::SimilarityMatrix m;
  m.measure = "linear";
  m.rows = {"a", "b"};
  m.cols = {"c", "d", "e"};
  m.values = {1,    0.5,   std::numeric_limits<double>::quiet_NaN(),
              0.25, 0.125, 0.0625};
  m.batches = {3, 3, 0, 2, 2, 2};
  m.standard_errors = {0.0,  0.03, std::numeric_limits<double>::quiet_NaN(),
                       0.02, 0.01, 0.005};
  v1::SimilarityMatrix proto;
  SimilarityMatrixToProto("s", m, &proto);
  EXPECT_EQ(proto.session_id(), "s");
  EXPECT_EQ(proto.measure(), "linear");
  ASSERT_EQ(proto.values_size(), 6);
  EXPECT_EQ(proto.rows_size(), 2);
  EXPECT_EQ(proto.cols_size(), 3);
  EXPECT_EQ(proto.values(1), 0.5);
  EXPECT_TRUE(std::isnan(proto.values(2)));
  EXPECT_EQ(proto.values(5), 0.0625);
  EXPECT_EQ(
      std::vector<int64_t>(proto.batches().begin(), proto.batches().end()),
      m.batches);
  ASSERT_EQ(proto.standard_errors_size(), 6);
  EXPECT_EQ(proto.standard_errors(1), 0.03);
  EXPECT_TRUE(std::isnan(proto.standard_errors(2)));
  EXPECT_EQ(proto.standard_errors(5), 0.005);
}

TEST(ProtoConvertTest, SessionCarriesConfigStreamsAndCounters) {
  core::SessionInfo info;
  info.config.measures = core::DefaultMeasures();
  info.streams = {"a/conv1", "a/fc"};
  info.batches_applied = 7;
  info.batches_pending = 2;
  info.batches_evicted = 1;
  info.pending_bytes = 512;
  info.state_bytes = 4096;
  v1::Session proto;
  SessionToProto("run", info, &proto);
  EXPECT_EQ(proto.session_id(), "run");
  ASSERT_EQ(proto.config().measures_size(), 1);
  EXPECT_EQ(proto.config().measures(0).name(), info.config.measures[0].name);
  EXPECT_EQ(proto.streams_size(), 2);
  EXPECT_EQ(proto.batches_applied(), 7);
  EXPECT_EQ(proto.batches_pending(), 2);
  EXPECT_EQ(proto.batches_evicted(), 1);
  EXPECT_EQ(proto.pending_bytes(), 512);
  EXPECT_EQ(proto.state_bytes(), 4096);
}

}  // namespace
}  // namespace cka::server
