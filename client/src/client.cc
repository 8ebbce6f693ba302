#include "cka/client/client.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpc_status.h"
#include "health.h"

namespace cka::client {
namespace {

class SimilarityWatchImpl final : public SimilarityWatch {
 public:
  SimilarityWatchImpl(v1::Similarity::Stub* stub, const ClientOptions& options,
                      const v1::WatchSimilarityRequest& request,
                      absl::Duration timeout) {
    Client::PrepareContext(options, timeout, &context_,
                           request.query().session_id());
    reader_ = stub->WatchSimilarity(&context_, request);
  }
  ~SimilarityWatchImpl() override {
    if (!finished_) {
      context_.TryCancel();
      while (reader_->Read(&scratch_)) {
      }
      reader_->Finish().ok();
    }
  }

  bool Next(v1::SimilarityMatrix* matrix) override {
    if (finished_ || ended_) return false;
    if (reader_->Read(matrix)) return true;
    ended_ = true;
    return false;
  }
  void Cancel() override { context_.TryCancel(); }
  absl::Status Finish() override {
    if (finished_) return status_;
    while (reader_->Read(&scratch_)) {
    }
    status_ = FromGrpcStatus(reader_->Finish());
    finished_ = true;
    return status_;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::SimilarityMatrix>> reader_;
  v1::SimilarityMatrix scratch_;
  bool ended_ = false;
  bool finished_ = false;
  absl::Status status_;
};

}  // namespace

const char* ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case ServingStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& options) {
  grpc::ChannelArguments args;
  const int limit =
      static_cast<int>(std::min<int64_t>(options.max_message_bytes, INT32_MAX));
  args.SetMaxSendMessageSize(limit);
  args.SetMaxReceiveMessageSize(limit);
  // Pings only while a call is open (a streamer's stream is), which the
  // server's ping policy accepts at its --min-ping-interval-s.
  args.SetInt(
      GRPC_ARG_KEEPALIVE_TIME_MS,
      static_cast<int>(std::min<int64_t>(
          absl::ToInt64Milliseconds(options.keepalive_time), INT32_MAX)));
  args.SetInt(
      GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
      static_cast<int>(std::min<int64_t>(
          absl::ToInt64Milliseconds(options.keepalive_timeout), INT32_MAX)));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.use_tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs;
    ssl.pem_cert_chain = options.tls_client_cert;
    ssl.pem_private_key = options.tls_client_key;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty())
      args.SetSslTargetNameOverride(options.tls_server_name);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.server.empty())
    return absl::InvalidArgumentError("server address: empty");
  if (options.default_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "default_deadline ", absl::FormatDuration(options.default_deadline),
        ": must be positive"));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes ", options.max_message_bytes, ": must be positive"));
  }
  if (options.keepalive_time <= absl::ZeroDuration() ||
      options.keepalive_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "keepalive_time and keepalive_timeout: must be positive");
  }
  if (!options.use_tls &&
      (!options.tls_root_certs.empty() || !options.tls_client_cert.empty() ||
       !options.tls_client_key.empty() || !options.tls_server_name.empty())) {
    return absl::InvalidArgumentError(
        "tls_root_certs, tls_client_cert, tls_client_key and tls_server_name "
        "need use_tls");
  }
  if (options.tls_client_cert.empty() != options.tls_client_key.empty()) {
    return absl::InvalidArgumentError(
        "tls_client_cert and tls_client_key: give both or neither");
  }
  std::shared_ptr<grpc::Channel> channel = MakeChannel(options);
  return std::unique_ptr<Client>(
      new Client(std::move(options), std::move(channel)));
}

Client::Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Similarity::NewStub(channel_)) {}

Client::~Client() = default;

void Client::PrepareContext(const ClientOptions& options,
                            absl::Duration timeout,
                            grpc::ClientContext* context,
                            const std::string& session_id) {
  if (!session_id.empty())
    context->AddMetadata(kSessionMetadataKey, session_id);
  if (timeout > absl::ZeroDuration() && timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  if (!options.bearer_token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", options.bearer_token));
  }
}

absl::Duration Client::TimeoutOr(std::optional<absl::Duration> timeout) const {
  return timeout.value_or(options_.default_deadline);
}

absl::StatusOr<v1::Session> Client::CreateSession(
    const std::string& session_id, const v1::SessionConfig& config,
    std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, TimeoutOr(timeout), &context, session_id);
  v1::CreateSessionRequest request;
  request.set_session_id(session_id);
  *request.mutable_config() = config;
  v1::Session session;
  grpc::Status status = stub_->CreateSession(&context, request, &session);
  if (!status.ok()) return FromGrpcStatus(status);
  return session;
}

absl::StatusOr<v1::Session> Client::GetSession(
    const std::string& session_id, std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, TimeoutOr(timeout), &context, session_id);
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  v1::Session session;
  grpc::Status status = stub_->GetSession(&context, request, &session);
  if (!status.ok()) return FromGrpcStatus(status);
  return session;
}

absl::StatusOr<std::vector<v1::Session>> Client::ListSessions(
    std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, TimeoutOr(timeout), &context);
  v1::ListSessionsResponse response;
  grpc::Status status =
      stub_->ListSessions(&context, v1::ListSessionsRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return std::vector<v1::Session>(response.sessions().begin(),
                                  response.sessions().end());
}

absl::Status Client::DeleteSession(const std::string& session_id,
                                   std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, TimeoutOr(timeout), &context, session_id);
  v1::DeleteSessionRequest request;
  request.set_session_id(session_id);
  v1::DeleteSessionResponse response;
  return FromGrpcStatus(stub_->DeleteSession(&context, request, &response));
}

absl::StatusOr<v1::SimilarityMatrix> Client::GetSimilarity(
    const v1::GetSimilarityRequest& query,
    std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, TimeoutOr(timeout), &context, query.session_id());
  v1::SimilarityMatrix matrix;
  grpc::Status status = stub_->GetSimilarity(&context, query, &matrix);
  if (!status.ok()) return FromGrpcStatus(status);
  return matrix;
}

absl::StatusOr<v1::SimilaritySeries> Client::GetSimilaritySeries(
    const v1::GetSimilaritySeriesRequest& query,
    std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, TimeoutOr(timeout), &context, query.session_id());
  v1::SimilaritySeries series;
  grpc::Status status = stub_->GetSimilaritySeries(&context, query, &series);
  if (!status.ok()) return FromGrpcStatus(status);
  return series;
}

absl::Status Client::WatchSimilarity(
    const v1::WatchSimilarityRequest& request,
    const std::function<bool(const v1::SimilarityMatrix&)>& on_update,
    std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  PrepareContext(options_, timeout.value_or(absl::ZeroDuration()), &context,
                 request.query().session_id());
  std::unique_ptr<grpc::ClientReader<v1::SimilarityMatrix>> reader =
      stub_->WatchSimilarity(&context, request);
  v1::SimilarityMatrix matrix;
  bool stopped_by_caller = false;
  while (reader->Read(&matrix)) {
    if (!on_update(matrix)) {
      stopped_by_caller = true;
      context.TryCancel();
      break;
    }
  }
  while (reader->Read(&matrix)) {
  }
  grpc::Status status = reader->Finish();
  if (stopped_by_caller) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      timeout.has_value()) {
    return absl::OkStatus();
  }
  return FromGrpcStatus(status);
}

std::unique_ptr<SimilarityWatch> Client::StartWatch(
    const v1::WatchSimilarityRequest& request,
    std::optional<absl::Duration> timeout) {
  return std::make_unique<SimilarityWatchImpl>(
      stub_.get(), options_, request, timeout.value_or(absl::ZeroDuration()));
}

absl::StatusOr<ServingStatus> Client::Health(
    const std::string& service, std::optional<absl::Duration> timeout) {
  return CheckHealth(channel_, options_, service, TimeoutOr(timeout));
}

}  // namespace cka::client
