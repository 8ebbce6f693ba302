// How the JSON API answers a gRPC status: the HTTP status google's HTTP
// mapping gives its code, and the body {"code": "NOT_FOUND", "message": ...}.
#ifndef CKA_SERVER_HTTP_STATUS_H_
#define CKA_SERVER_HTTP_STATUS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/status.h"

namespace cka::server {

// Returns the HTTP status of `code` (google.rpc.Code's HTTP mapping, as
// grpc-gateway uses): INVALID_ARGUMENT, FAILED_PRECONDITION and OUT_OF_RANGE
// 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
// ALREADY_EXISTS and ABORTED 409, RESOURCE_EXHAUSTED 429, CANCELLED 499,
// UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, OK 200, anything
// else 500. Thread-safe.
int HttpStatusOf(grpc::StatusCode code);

// Returns the JSON error body of `code` and `message`:
// {"code":"NOT_FOUND","message":"..."}, the code by its canonical name.
// Bytes of `message` that are not UTF-8 are replaced (U+FFFD). Thread-safe.
std::string ErrorJson(grpc::StatusCode code, absl::string_view message);

// Returns `message` in protobuf's JSON mapping as the API answers it: proto
// field names, fields with default values printed, on one line (int64 as
// strings, NaN as "NaN"). ErrorJson of INTERNAL if it cannot be printed.
// Thread-safe.
std::string MessageJson(const google::protobuf::Message& message);

}  // namespace cka::server

#endif  // CKA_SERVER_HTTP_STATUS_H_
