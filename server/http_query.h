// The query strings of the JSON API, read into the gRPC requests they stand
// for. Only the syntax is checked here (known parameters, well-formed
// numbers); everything else is the service's to judge, as over gRPC.
#ifndef CKA_SERVER_HTTP_QUERY_H_
#define CKA_SERVER_HTTP_QUERY_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "cka/v1/similarity.pb.h"

namespace cka::server {

// A request's query parameters, name → value, decoded, in order, repeated
// names kept (httplib::Params is this type).
using QueryParams = std::multimap<std::string, std::string>;

// Returns the GetSimilarity request for session `session_id` from the
// parameters measure, rows (repeated), cols (repeated), step_min, step_max,
// block_threshold and block_share (GetSimilarityRequest.block_warn_share).
// InvalidArgument naming the parameter and its value (its first 64 bytes) for
// an unknown parameter, a single-valued one given twice, a step that is not a
// decimal int64 or a block option that is not a decimal number. Thread-safe.
absl::StatusOr<v1::GetSimilarityRequest> SimilarityRequestFromQuery(
    const std::string& session_id, const QueryParams& params);

// Returns the WatchSimilarity request: SimilarityRequestFromQuery's
// parameters plus min_interval_ms (a decimal int32), with the same errors.
// Thread-safe.
absl::StatusOr<v1::WatchSimilarityRequest> WatchRequestFromQuery(
    const std::string& session_id, const QueryParams& params);

// Returns the GetSimilaritySeries request for session `session_id` from the
// parameters measure, row (repeated) and col (repeated): pair i is the i-th
// row with the i-th col, so `row=a&col=b&row=a&col=c` asks for (a, b) and
// (a, c). InvalidArgument for an unknown parameter, measure given twice, or
// row and col counts that differ. Thread-safe.
absl::StatusOr<v1::GetSimilaritySeriesRequest> SeriesRequestFromQuery(
    const std::string& session_id, const QueryParams& params);

}  // namespace cka::server

#endif  // CKA_SERVER_HTTP_QUERY_H_
