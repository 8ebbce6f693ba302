// The gRPC server interceptor that records go-grpc-prometheus' families in
// Metrics.
#ifndef CKA_SERVER_GRPC_METRICS_INTERCEPTOR_H_
#define CKA_SERVER_GRPC_METRICS_INTERCEPTOR_H_

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics.h"

namespace cka::server {

// Creates, for every call, an interceptor that counts it started when it is
// created, each message received and sent, and, when its status is sent, the
// call handled with its code and its handling time. `metrics` must outlive
// the server. Thread-safe.
class GrpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GrpcMetricsInterceptorFactory(Metrics* metrics)
      : metrics_(metrics) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  Metrics* const metrics_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_GRPC_METRICS_INTERCEPTOR_H_
