#include "server/status_mapping.h"

#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

struct CodeCase {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
  int rpc_code;  // google.rpc.Code, as written in BatchAck.code
};

// Every canonical code, written out by name so that a wrong entry in the
// mapping shows up here.
constexpr CodeCase kCodeCases[] = {
    {absl::StatusCode::kOk, grpc::StatusCode::OK, 0},
    {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED, 1},
    {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN, 2},
    {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT, 3},
    {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED,
     4},
    {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND, 5},
    {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS, 6},
    {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED,
     7},
    {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED,
     8},
    {absl::StatusCode::kFailedPrecondition,
     grpc::StatusCode::FAILED_PRECONDITION, 9},
    {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED, 10},
    {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE, 11},
    {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED, 12},
    {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL, 13},
    {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE, 14},
    {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS, 15},
    {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED, 16},
};

TEST(StatusMappingTest, EveryCanonicalCodeMapsToTheGrpcCodeOfTheSameName) {
  for (const CodeCase& c : kCodeCases) {
    SCOPED_TRACE(absl::StatusCodeToString(c.absl_code));
    const absl::Status status(
        c.absl_code, c.absl_code == absl::StatusCode::kOk ? "" : "why");
    const grpc::Status mapped = ToGrpcStatus(status, "test");
    EXPECT_EQ(mapped.error_code(), c.grpc_code);
    EXPECT_EQ(ToRpcCode(status, "test"), c.rpc_code);
  }
}

TEST(StatusMappingTest, MessageIsKeptVerbatim) {
  const std::string message =
      "layer 'conv3' batch 'e1/17': 255 rows, expected 256";
  const grpc::Status mapped =
      ToGrpcStatus(absl::InvalidArgumentError(message), "test");
  EXPECT_EQ(mapped.error_message(), message);
}

TEST(StatusMappingTest, OkHasNoMessage) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus(), "test").ok());
  EXPECT_EQ(ToGrpcStatus(absl::OkStatus(), "test").error_message(), "");
}

TEST(StatusMappingTest, NonCanonicalCodeBecomesUnknown) {
  const absl::Status odd(static_cast<absl::StatusCode>(42), "odd");
  EXPECT_EQ(ToGrpcStatus(odd, "test").error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(ToRpcCode(odd, "test"), 2);
}

}  // namespace
}  // namespace cka::server
