#include "server/grpc_metrics_interceptor.h"

#include <chrono>

namespace cka::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

const char* TypeName(grpc::experimental::ServerRpcInfo::Type type) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  switch (type) {
    case Type::UNARY:
      return "unary";
    case Type::CLIENT_STREAMING:
      return "client_stream";
    case Type::SERVER_STREAMING:
      return "server_stream";
    case Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

// The metrics of one call; gRPC deletes it when the call is done.
class GrpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  GrpcMetricsInterceptor(Metrics* metrics,
                         grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics),
        method_(metrics->ForGrpcMethod(
            info->method() != nullptr ? info->method() : "",
            TypeName(info->type()))),
        start_(std::chrono::steady_clock::now()) {
    method_->started->Increment();
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      method_->msg_received->Increment();
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      method_->msg_sent->Increment();
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      const std::chrono::duration<double> seconds =
          std::chrono::steady_clock::now() - start_;
      metrics_->RecordHandled(*method_, methods->GetSendStatus().error_code(),
                              seconds.count());
    }
    methods->Proceed();
  }

 private:
  Metrics* const metrics_;
  const Metrics::GrpcMethod* const method_;
  const std::chrono::steady_clock::time_point start_;
};

}  // namespace

grpc::experimental::Interceptor*
GrpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new GrpcMetricsInterceptor(metrics_, info);
}

}  // namespace cka::server
