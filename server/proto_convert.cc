#include "server/proto_convert.h"

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cka::server {
namespace {

absl::StatusOr<core::Kernel> KernelFromProto(v1::Kernel kernel, int index) {
  switch (kernel) {
    case v1::KERNEL_UNSPECIFIED:
    case v1::LINEAR:
      return core::Kernel::kLinear;
    case v1::RBF:
      return core::Kernel::kRbf;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "config.measures[", index, "].kernel: ", static_cast<int>(kernel),
          " is not a Kernel; expected LINEAR or RBF"));
  }
}

absl::StatusOr<core::Estimator> EstimatorFromProto(v1::Estimator estimator,
                                                   int index) {
  switch (estimator) {
    case v1::ESTIMATOR_UNSPECIFIED:
    case v1::UNBIASED:
      return core::Estimator::kUnbiased;
    case v1::BIASED:
      return core::Estimator::kBiased;
    case v1::EXACT:
      return core::Estimator::kExact;
    case v1::EXACT_DEBIASED:
      return core::Estimator::kExactDebiased;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("config.measures[", index,
                       "].estimator: ", static_cast<int>(estimator),
                       " is not an Estimator; expected UNBIASED, BIASED, EXACT "
                       "or EXACT_DEBIASED"));
  }
}

absl::StatusOr<core::MeasureKind> MeasureKindFromProto(v1::MeasureKind kind,
                                                       int index) {
  switch (kind) {
    case v1::MEASURE_KIND_UNSPECIFIED:
    case v1::CKA:
      return core::MeasureKind::kCka;
    case v1::CCA_R2:
      return core::MeasureKind::kCcaR2;
    case v1::CCA_MEAN_RHO:
      return core::MeasureKind::kCcaMeanRho;
    case v1::SVCCA:
      return core::MeasureKind::kSvcca;
    case v1::PWCCA:
      return core::MeasureKind::kPwcca;
    case v1::REGRESSION_R2:
      return core::MeasureKind::kRegressionR2;
    case v1::PROCRUSTES:
      return core::MeasureKind::kProcrustes;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "config.measures[", index, "].kind: ", static_cast<int>(kind),
          " is not a MeasureKind; expected CKA, CCA_R2, CCA_MEAN_RHO, SVCCA, "
          "PWCCA, REGRESSION_R2 or PROCRUSTES"));
  }
}

// CKA is left unspecified, as configs written before kinds existed have it.
v1::MeasureKind MeasureKindToProto(core::MeasureKind kind) {
  switch (kind) {
    case core::MeasureKind::kCka:
      return v1::MEASURE_KIND_UNSPECIFIED;
    case core::MeasureKind::kCcaR2:
      return v1::CCA_R2;
    case core::MeasureKind::kCcaMeanRho:
      return v1::CCA_MEAN_RHO;
    case core::MeasureKind::kSvcca:
      return v1::SVCCA;
    case core::MeasureKind::kPwcca:
      return v1::PWCCA;
    case core::MeasureKind::kRegressionR2:
      return v1::REGRESSION_R2;
    case core::MeasureKind::kProcrustes:
      return v1::PROCRUSTES;
  }
  return v1::MEASURE_KIND_UNSPECIFIED;
}

v1::Kernel KernelToProto(core::Kernel kernel) {
  return kernel == core::Kernel::kRbf ? v1::RBF : v1::LINEAR;
}

v1::Estimator EstimatorToProto(core::Estimator estimator) {
  switch (estimator) {
    case core::Estimator::kUnbiased:
      return v1::UNBIASED;
    case core::Estimator::kBiased:
      return v1::BIASED;
    case core::Estimator::kExact:
      return v1::EXACT;
    case core::Estimator::kExactDebiased:
      return v1::EXACT_DEBIASED;
  }
  return v1::ESTIMATOR_UNSPECIFIED;
}

absl::StatusOr<core::DType> DTypeFromProto(v1::DType dtype,
                                           const std::string& field) {
  switch (dtype) {
    case v1::FLOAT32:
      return core::DType::kFloat32;
    case v1::FLOAT64:
      return core::DType::kFloat64;
    case v1::FLOAT16:
      return core::DType::kFloat16;
    case v1::BFLOAT16:
      return core::DType::kBFloat16;
    case v1::DTYPE_UNSPECIFIED:
      return absl::InvalidArgumentError(absl::StrCat(
          field,
          ".dtype: DTYPE_UNSPECIFIED; expected FLOAT32, FLOAT64, FLOAT16 or "
          "BFLOAT16"));
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".dtype: ", static_cast<int>(dtype),
          " is not a DType; expected FLOAT32, FLOAT64, FLOAT16 or BFLOAT16"));
  }
}

}  // namespace

absl::StatusOr<core::SessionConfig> SessionConfigFromProto(
    const v1::SessionConfig& proto) {
  core::SessionConfig config;
  config.measures.reserve(proto.measures_size());
  for (int i = 0; i < proto.measures_size(); ++i) {
    const v1::Measure& m = proto.measures(i);
    core::Measure measure;
    measure.name = m.name();
    absl::StatusOr<core::Kernel> kernel = KernelFromProto(m.kernel(), i);
    if (!kernel.ok()) return kernel.status();
    measure.kernel = *kernel;
    measure.rbf_threshold = m.rbf_threshold();
    absl::StatusOr<core::Estimator> estimator =
        EstimatorFromProto(m.estimator(), i);
    if (!estimator.ok()) return estimator.status();
    measure.estimator = *estimator;
    absl::StatusOr<core::MeasureKind> kind = MeasureKindFromProto(m.kind(), i);
    if (!kind.ok()) return kind.status();
    measure.kind = *kind;
    // The comparison family has one estimator, the default for it.
    if (core::IsMomentKind(measure.kind) &&
        m.estimator() == v1::ESTIMATOR_UNSPECIFIED) {
      measure.estimator = core::Estimator::kExact;
    }
    config.measures.push_back(std::move(measure));
  }
  config.streams.assign(proto.streams().begin(), proto.streams().end());
  config.stream_widths.assign(proto.stream_widths().begin(),
                              proto.stream_widths().end());
  config.step_bucket = proto.step_bucket();
  config.expected_sources.assign(proto.expected_sources().begin(),
                                 proto.expected_sources().end());
  config.join_window = proto.join_window();
  return config;
}

void SessionConfigToProto(const core::SessionConfig& config,
                          v1::SessionConfig* proto) {
  proto->Clear();
  for (const core::Measure& measure : config.measures) {
    v1::Measure* m = proto->add_measures();
    m->set_name(measure.name);
    m->set_kernel(KernelToProto(measure.kernel));
    m->set_rbf_threshold(measure.rbf_threshold);
    m->set_estimator(EstimatorToProto(measure.estimator));
    m->set_kind(MeasureKindToProto(measure.kind));
  }
  for (const std::string& stream : config.streams) proto->add_streams(stream);
  for (int64_t width : config.stream_widths) proto->add_stream_widths(width);
  proto->set_step_bucket(config.step_bucket);
  for (const std::string& source : config.expected_sources)
    proto->add_expected_sources(source);
  proto->set_join_window(config.join_window);
}

absl::StatusOr<core::TensorView> TensorViewFromProto(const v1::Tensor& tensor,
                                                     const std::string& field) {
  core::TensorView view;
  absl::StatusOr<core::DType> dtype = DTypeFromProto(tensor.dtype(), field);
  if (!dtype.ok()) return dtype.status();
  view.dtype = *dtype;
  if (tensor.shape_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".shape: empty; expected [n, d, ...] with n examples"));
  }
  // Element count in uint64 with an overflow check: a hostile shape must not
  // wrap around to a count that happens to match the bytes.
  uint64_t elements = 1;
  bool overflow = false;
  for (int i = 0; i < tensor.shape_size(); ++i) {
    const int64_t dim = tensor.shape(i);
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".shape[", i, "]: ", dim, "; expected a non-negative size"));
    }
    overflow |=
        __builtin_mul_overflow(elements, static_cast<uint64_t>(dim), &elements);
  }
  uint64_t expected_bytes = 0;
  overflow |= __builtin_mul_overflow(
      elements, uint64_t{core::DTypeSize(view.dtype)}, &expected_bytes);
  const std::string& data = tensor.data();
  if (overflow || expected_bytes != data.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": shape [", absl::StrJoin(tensor.shape(), ", "), "] of ",
        core::DTypeName(view.dtype), " needs ",
        overflow ? std::string("more than 2^64") : absl::StrCat(expected_bytes),
        " bytes, but data has ", data.size()));
  }
  view.shape.assign(tensor.shape().begin(), tensor.shape().end());
  view.data = data.data();
  view.size_bytes = data.size();
  return view;
}

absl::StatusOr<core::BatchInput> BatchInputFromProto(
    const v1::ActivationBatch& batch) {
  core::BatchInput input;
  input.source = batch.source();
  input.batch_id = batch.batch_id();
  input.step = batch.step();
  input.layers.reserve(batch.layers_size());
  for (int i = 0; i < batch.layers_size(); ++i) {
    const v1::LayerActivation& layer = batch.layers(i);
    const std::string where =
        absl::StrCat("layers[", i, "] '", layer.layer(), "'");
    core::LayerInput li;
    li.layer = layer.layer();
    const v1::Tensor* tensor = nullptr;
    switch (layer.payload_case()) {
      case v1::LayerActivation::kActivations:
        li.kind = core::LayerInput::Kind::kActivations;
        tensor = &layer.activations();
        break;
      case v1::LayerActivation::kGram:
        li.kind = core::LayerInput::Kind::kGram;
        tensor = &layer.gram();
        break;
      case v1::LayerActivation::PAYLOAD_NOT_SET:
        return absl::InvalidArgumentError(absl::StrCat(
            where, ".payload: not set; expected activations or gram"));
    }
    absl::StatusOr<core::TensorView> view = TensorViewFromProto(
        *tensor, absl::StrCat(where, li.kind == core::LayerInput::Kind::kGram
                                         ? ".gram"
                                         : ".activations"));
    if (!view.ok()) return view.status();
    li.tensor = *std::move(view);
    input.layers.push_back(std::move(li));
  }
  return input;
}

core::SimilarityQuery SimilarityQueryFromProto(
    const v1::GetSimilarityRequest& request) {
  core::SimilarityQuery query;
  query.measure = request.measure();
  query.rows.assign(request.rows().begin(), request.rows().end());
  query.cols.assign(request.cols().begin(), request.cols().end());
  if (request.has_step_min()) query.step_min = request.step_min();
  if (request.has_step_max()) query.step_max = request.step_max();
  if (request.has_block_threshold()) {
    query.block_threshold = request.block_threshold();
  }
  if (request.has_block_warn_share()) {
    query.block_warn_share = request.block_warn_share();
  }
  return query;
}

void SimilarityMatrixToProto(const std::string& session_id,
                             const core::SimilarityMatrix& matrix,
                             v1::SimilarityMatrix* proto) {
  proto->Clear();
  proto->set_session_id(session_id);
  proto->set_measure(matrix.measure);
  for (const std::string& row : matrix.rows) proto->add_rows(row);
  for (const std::string& col : matrix.cols) proto->add_cols(col);
  proto->mutable_values()->Add(matrix.values.begin(), matrix.values.end());
  proto->mutable_batches()->Add(matrix.batches.begin(), matrix.batches.end());
  for (const core::LayerBlock& block : matrix.blocks) {
    v1::LayerBlock* b = proto->add_blocks();
    b->set_source(block.source);
    b->set_first_stream(block.first_stream);
    b->set_last_stream(block.last_stream);
    b->set_first_layer(block.first_layer);
    b->set_length(block.length);
    b->set_source_layers(block.source_layers);
    b->set_mean_value(block.mean_value);
    b->set_min_value(block.min_value);
    b->set_warning(block.warning);
  }
  proto->set_note(matrix.note);
  proto->mutable_standard_errors()->Add(matrix.standard_errors.begin(),
                                        matrix.standard_errors.end());
}

core::SeriesQuery SeriesQueryFromProto(
    const v1::GetSimilaritySeriesRequest& request) {
  core::SeriesQuery query;
  query.measure = request.measure();
  query.pairs.reserve(request.pairs_size());
  for (const v1::StreamPair& pair : request.pairs()) {
    query.pairs.push_back({pair.row(), pair.col()});
  }
  return query;
}

void SimilaritySeriesToProto(const std::string& session_id,
                             const core::SimilaritySeries& series,
                             v1::SimilaritySeries* proto) {
  proto->Clear();
  proto->set_session_id(session_id);
  proto->set_measure(series.measure);
  for (const core::StreamPair& pair : series.pairs) {
    v1::StreamPair* p = proto->add_pairs();
    p->set_row(pair.row);
    p->set_col(pair.col);
  }
  proto->set_step_bucket(series.step_bucket);
  proto->mutable_buckets()->Reserve(static_cast<int>(series.buckets.size()));
  for (const core::SeriesBucket& bucket : series.buckets) {
    v1::SeriesBucket* b = proto->add_buckets();
    b->set_step_first(bucket.step_first);
    b->set_step_last(bucket.step_last);
    b->mutable_values()->Add(bucket.values.begin(), bucket.values.end());
    b->mutable_batches()->Add(bucket.batches.begin(), bucket.batches.end());
    b->mutable_standard_errors()->Add(bucket.standard_errors.begin(),
                                      bucket.standard_errors.end());
  }
}

void SessionToProto(const std::string& session_id,
                    const core::SessionInfo& info, v1::Session* proto) {
  proto->Clear();
  proto->set_session_id(session_id);
  SessionConfigToProto(info.config, proto->mutable_config());
  for (const std::string& stream : info.streams) proto->add_streams(stream);
  proto->set_batches_applied(info.batches_applied);
  proto->set_batches_pending(info.batches_pending);
  proto->set_batches_evicted(info.batches_evicted);
  proto->set_state_bytes(info.state_bytes);
  proto->set_pending_bytes(info.pending_bytes);
  proto->set_pairs_missed(info.pairs_missed);
  proto->set_held_bytes(info.held_bytes);
}

}  // namespace cka::server
