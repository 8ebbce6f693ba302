// Conversions between the cka.v1 wire messages and the core engine's types.
//
// All functions are thread-safe (they touch only their arguments). Errors are
// InvalidArgument with a message that names the field, the value and what was
// expected.
#ifndef CKA_SERVER_PROTO_CONVERT_H_
#define CKA_SERVER_PROTO_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "cka/core/config.h"
#include "cka/core/session.h"
#include "cka/core/tensor.h"
#include "cka/v1/similarity.pb.h"

namespace cka::server {

// Returns the core config of `proto`. Unspecified kernels are LINEAR and
// unspecified estimators UNBIASED (the proto's documented defaults).
// InvalidArgument for an enum value outside the proto's; the config's own rules
// are left to core::ValidateConfig.
absl::StatusOr<core::SessionConfig> SessionConfigFromProto(
    const v1::SessionConfig& proto);

// Writes `config` into `*proto`, replacing its contents.
void SessionConfigToProto(const core::SessionConfig& config,
                          v1::SessionConfig* proto);

// Returns a view of `tensor`: the returned TensorView points into tensor.data()
// and is valid while `tensor` lives unmodified; nothing is copied. `field`
// names the tensor in messages
// ("layers[2] 'conv3' activations"). InvalidArgument for an unspecified or
// unknown dtype, an empty shape, a negative dimension, or a byte count that
// differs from shape × dtype size.
absl::StatusOr<core::TensorView> TensorViewFromProto(const v1::Tensor& tensor,
                                                     const std::string& field);

// Returns the core input of `batch`. The tensors are views into `batch` (see
// TensorViewFromProto) and are valid while `batch` lives unmodified.
// InvalidArgument for a layer without a payload and for the tensor errors of
// TensorViewFromProto. Names, ranks, NaN and the mathematics are checked by
// core::Session::Prepare.
absl::StatusOr<core::BatchInput> BatchInputFromProto(
    const v1::ActivationBatch& batch);

// Returns the core query of `request` (empty measure, rows or cols keep their
// meaning: the first measure, every stream).
core::SimilarityQuery SimilarityQueryFromProto(
    const v1::GetSimilarityRequest& request);

// Returns the core query of `request`.
core::SeriesQuery SeriesQueryFromProto(
    const v1::GetSimilaritySeriesRequest& request);

// Writes `series` of session `session_id` into `*proto`, replacing its
// contents.
void SimilaritySeriesToProto(const std::string& session_id,
                             const core::SimilaritySeries& series,
                             v1::SimilaritySeries* proto);

// Writes `matrix` of session `session_id` into `*proto`, replacing its
// contents.
void SimilarityMatrixToProto(const std::string& session_id,
                             const core::SimilarityMatrix& matrix,
                             v1::SimilarityMatrix* proto);

// Writes the configuration and counters of session `session_id` into `*proto`,
// replacing its contents.
void SessionToProto(const std::string& session_id,
                    const core::SessionInfo& info, v1::Session* proto);

}  // namespace cka::server

#endif  // CKA_SERVER_PROTO_CONVERT_H_
