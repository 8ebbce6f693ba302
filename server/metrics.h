// ckad's Prometheus metrics: the gRPC server families of go-grpc-prometheus
// and ckad's own (ckad_ prefix, base units), served in the text format at the
// HTTP server's /metrics.
#ifndef CKA_SERVER_METRICS_H_
#define CKA_SERVER_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace cka::server {

// The metrics of one ckad. The gRPC families (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_handling_seconds,
// grpc_server_msg_received_total, grpc_server_msg_sent_total; labels
// grpc_type, grpc_service, grpc_method and, for handled, grpc_code) are
// recorded by GrpcMetricsInterceptorFactory; the Similarity service's
// methods are present from the start, with zeros. ckad's own:
//   ckad_batches_total{outcome}         acks by outcome: applied, duplicate,
//                                       or the refusal's code
//                                       (invalid_argument...)
//   ckad_ack_latency_seconds            histogram: batch read to ack ready
//   ckad_group_commit_seconds           histogram: one write of a group commit
//   ckad_group_commit_batches           histogram: acks one group commit
//   answers ckad_sessions, ckad_state_bytes, ckad_pending_bytes,
//   ckad_memory_budget_bytes, ckad_memory_budget_used_bytes
//                                       gauges read at each scrape (Gauges)
//   process_resident_memory_bytes       the process' resident memory
//   ckad_build_info{version,grpc_version} 1
// Labels take a bounded set of values: methods of services other than the
// ones ckad registers are counted as grpc_service="unknown".
//
// Thread-safe.
class Metrics {
 public:
  // What the gauges show, read at each scrape.
  struct Gauges {
    int64_t sessions = 0;
    int64_t state_bytes = 0;    // all sessions' running sums
    int64_t pending_bytes = 0;  // all sessions' join buffers
    int64_t memory_budget_bytes = 0;
    int64_t memory_budget_used_bytes = 0;
  };
  // The series of one gRPC method. Owned by the Metrics.
  struct GrpcMethod {
    std::string type;  // unary, client_stream, server_stream, bidi_stream
    std::string service;
    std::string method;
    prometheus::Counter* started = nullptr;
    prometheus::Counter* msg_received = nullptr;
    prometheus::Counter* msg_sent = nullptr;
    prometheus::Histogram* handling_seconds = nullptr;
  };

  // `gauges` is called at each scrape (on the scraping thread); it must be
  // thread-safe and outlive the Metrics' last Text().
  explicit Metrics(std::function<Gauges()> gauges);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Returns the series of `full_method` ("/package.Service/Method") called as
  // `type` (GrpcMethod::type). Valid as long as the Metrics.
  const GrpcMethod* ForGrpcMethod(const std::string& full_method,
                                  const std::string& type);
  // Counts a call of `method` that ended with `code` after `seconds`.
  void RecordHandled(const GrpcMethod& method, grpc::StatusCode code,
                     double seconds);
  // Counts a batch's ack: `code` a google.rpc.Code value (0 with `duplicate`
  // for a repeated batch), `latency` from its read to its ack.
  void RecordBatch(int code, bool duplicate, absl::Duration latency);
  // Counts one group commit's write of `seconds` that answered `batches`
  // acks (and session changes).
  void RecordGroupCommit(absl::Duration seconds, int64_t batches);

  // Returns every metric in Prometheus' text format (version 0.0.4).
  std::string Text();

 private:
  const std::function<Gauges()> gauges_;
  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Counter>& msg_received_;
  prometheus::Family<prometheus::Counter>& msg_sent_;
  prometheus::Family<prometheus::Counter>& batches_;
  prometheus::Histogram& ack_latency_;
  prometheus::Histogram& group_commit_seconds_;
  prometheus::Histogram& group_commit_batches_;
  prometheus::Gauge& sessions_;
  prometheus::Gauge& state_bytes_;
  prometheus::Gauge& pending_bytes_;
  prometheus::Gauge& budget_bytes_;
  prometheus::Gauge& budget_used_bytes_;
  prometheus::Gauge& resident_bytes_;

  absl::Mutex mu_;  // methods_, and one scrape at a time
  std::map<std::string, std::unique_ptr<GrpcMethod>> methods_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace cka::server

#endif  // CKA_SERVER_METRICS_H_
