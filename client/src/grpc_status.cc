#include "grpc_status.h"

#include <string>

namespace cka::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return FromCode(static_cast<int>(status.error_code()),
                  status.error_message());
}

absl::Status FromCode(int code, const std::string& message) {
  if (code == 0) return absl::OkStatus();
  // google.rpc.Code runs 0..16; anything else from the wire is treated as
  // Unknown.
  if (code < 0 || code > 16) return absl::UnknownError(message);
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

}  // namespace cka::client
