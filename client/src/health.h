// A client of the standard grpc.health.v1.Health/Check method over the generic
// stub: the health protos are not installed with gRPC, and the two messages are
// one field each.
#ifndef CKA_CLIENT_SRC_HEALTH_H_
#define CKA_CLIENT_SRC_HEALTH_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cka/client/client.h"

namespace cka::client {

// Calls grpc.health.v1.Health/Check for `service` on `channel`; see
// Client::Health.
absl::StatusOr<ServingStatus> CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
    const std::string& service, absl::Duration timeout);

}  // namespace cka::client

#endif  // CKA_CLIENT_SRC_HEALTH_H_
