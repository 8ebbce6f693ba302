// Conversion between grpc::Status and absl::Status; the one place the client
// does it.
#ifndef CKA_CLIENT_SRC_GRPC_STATUS_H_
#define CKA_CLIENT_SRC_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace cka::client {

// Returns `status` as an absl::Status with the same code and message (the
// numbers are equal: both are google.rpc.Code).
absl::Status FromGrpcStatus(const grpc::Status& status);

// Returns the absl::Status of a BatchAck's code and message.
absl::Status FromCode(int code, const std::string& message);

}  // namespace cka::client

#endif  // CKA_CLIENT_SRC_GRPC_STATUS_H_
