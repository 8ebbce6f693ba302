// The one place where a core status becomes a gRPC status.
#ifndef CKA_SERVER_STATUS_MAPPING_H_
#define CKA_SERVER_STATUS_MAPPING_H_

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace cka::server {

// Returns the gRPC status for `status`: the canonical code of the same name and
// the same message. `what` names the operation ("CreateSession", "batch
// 'e1/17'") for the log: codes that mean a server-side fault (INTERNAL,
// UNKNOWN, DATA_LOSS) are logged at error level, the rest at debug level, so
// each failure is logged once, here. Thread-safe.
grpc::Status ToGrpcStatus(const absl::Status& status, std::string_view what);

// Returns the google.rpc.Code value of `status` for BatchAck.code, through
// ToGrpcStatus (and its log line). Thread-safe.
int ToRpcCode(const absl::Status& status, std::string_view what);

}  // namespace cka::server

#endif  // CKA_SERVER_STATUS_MAPPING_H_
