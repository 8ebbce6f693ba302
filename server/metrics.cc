#include "server/metrics.h"

#include <unistd.h>

#include <fstream>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/text_serializer.h"

#ifndef CKAD_VERSION
#define CKAD_VERSION "unknown"
#endif

namespace cka::server {
namespace {

// The services whose methods get labels of their own.
const std::set<std::string>& KnownServices() {
  static const auto* services =
      new std::set<std::string>{"cka.v1.Similarity", "grpc.health.v1.Health",
                                "grpc.reflection.v1alpha.ServerReflection"};
  return *services;
}

// prometheus.DefBuckets, as go-grpc-prometheus uses.
prometheus::Histogram::BucketBoundaries HandlingBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// Returns the process' resident memory from /proc/self/statm, 0 if unknown.
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0;
  int64_t resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

template <typename T>
prometheus::Family<T>& Register(prometheus::detail::Builder<T> builder,
                                const char* name, const char* help,
                                prometheus::Registry& registry) {
  return builder.Name(name).Help(help).Register(registry);
}

}  // namespace

Metrics::Metrics(std::function<Gauges()> gauges)
    : gauges_(std::move(gauges)),
      registry_(std::make_shared<prometheus::Registry>()),
      started_(Register(prometheus::BuildCounter(), "grpc_server_started_total",
                        "Total number of RPCs started on the server.",
                        *registry_)),
      handled_(Register(prometheus::BuildCounter(), "grpc_server_handled_total",
                        "Total number of RPCs completed on the server, "
                        "regardless of success or failure.",
                        *registry_)),
      handling_seconds_(Register(
          prometheus::BuildHistogram(), "grpc_server_handling_seconds",
          "Histogram of response latency (seconds) of gRPC that had been "
          "application-level handled by the server.",
          *registry_)),
      msg_received_(Register(prometheus::BuildCounter(),
                             "grpc_server_msg_received_total",
                             "Total number of RPC stream messages received "
                             "on the server.",
                             *registry_)),
      msg_sent_(Register(prometheus::BuildCounter(),
                         "grpc_server_msg_sent_total",
                         "Total number of gRPC stream messages sent by the "
                         "server.",
                         *registry_)),
      batches_(Register(prometheus::BuildCounter(), "ckad_batches_total",
                        "Activation batches acked, by outcome: applied, "
                        "duplicate, or the code of the refusal.",
                        *registry_)),
      ack_latency_(
          Register(prometheus::BuildHistogram(), "ckad_ack_latency_seconds",
                   "Seconds from reading a batch to its ack being ready "
                   "(applied, and durable with --data-dir).",
                   *registry_)
              .Add({},
                   prometheus::Histogram::BucketBoundaries{
                       0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                       1, 2.5, 5, 10})),
      group_commit_seconds_(
          Register(prometheus::BuildHistogram(), "ckad_group_commit_seconds",
                   "Seconds one group commit took to write to --data-dir.",
                   *registry_)
              .Add({},
                   prometheus::Histogram::BucketBoundaries{
                       0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                       0.25, 0.5, 1, 2.5})),
      group_commit_batches_(
          Register(prometheus::BuildHistogram(), "ckad_group_commit_batches",
                   "Acks and session changes one group commit answered.",
                   *registry_)
              .Add({},
                   prometheus::Histogram::BucketBoundaries{
                       1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024})),
      sessions_(Register(prometheus::BuildGauge(), "ckad_sessions",
                         "Sessions held.", *registry_)
                    .Add({})),
      state_bytes_(Register(prometheus::BuildGauge(), "ckad_state_bytes",
                            "Bytes of the running sums of all sessions.",
                            *registry_)
                       .Add({})),
      pending_bytes_(Register(prometheus::BuildGauge(), "ckad_pending_bytes",
                              "Bytes of the batches waiting in the join "
                              "buffers of all sessions.",
                              *registry_)
                         .Add({})),
      budget_bytes_(Register(prometheus::BuildGauge(),
                             "ckad_memory_budget_bytes",
                             "The memory budget every request draws from "
                             "(--memory-limit-mb).",
                             *registry_)
                        .Add({})),
      budget_used_bytes_(
          Register(prometheus::BuildGauge(), "ckad_memory_budget_used_bytes",
                   "Bytes of the memory budget in use.", *registry_)
              .Add({})),
      resident_bytes_(Register(prometheus::BuildGauge(),
                               "process_resident_memory_bytes",
                               "Resident memory size in bytes.", *registry_)
                          .Add({})) {
  Register(prometheus::BuildGauge(), "ckad_build_info",
           "Always 1; the labels say which ckad this is.", *registry_)
      .Add({{"version", CKAD_VERSION}, {"grpc_version", grpc::Version()}})
      .Set(1);
  // go-grpc-prometheus starts every registered method at zero, so that a
  // rate() over a method not yet called is 0 rather than absent.
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          "cka.v1.Similarity");
  for (int i = 0; service != nullptr && i < service->method_count(); ++i) {
    const google::protobuf::MethodDescriptor* m = service->method(i);
    const char* type =
        m->client_streaming()
            ? (m->server_streaming() ? "bidi_stream" : "client_stream")
            : (m->server_streaming() ? "server_stream" : "unary");
    const GrpcMethod* method = ForGrpcMethod(
        absl::StrCat("/", service->full_name(), "/", m->name()), type);
    handled_.Add({{"grpc_type", method->type},
                  {"grpc_service", method->service},
                  {"grpc_method", method->method},
                  {"grpc_code", "OK"}});
  }
  for (const char* outcome : {"applied", "duplicate"}) {
    batches_.Add({{"outcome", outcome}});
  }
}

const Metrics::GrpcMethod* Metrics::ForGrpcMethod(
    const std::string& full_method, const std::string& type) {
  // "/package.Service/Method"; any other service shares one "unknown" series
  // per type, so that a client cannot grow the label set.
  std::string service = "unknown";
  std::string name = "unknown";
  const size_t slash = full_method.rfind('/');
  if (slash != std::string::npos && slash > 1 &&
      KnownServices().count(full_method.substr(1, slash - 1)) > 0) {
    service = full_method.substr(1, slash - 1);
    name = full_method.substr(slash + 1);
  }
  const std::string key = absl::StrCat(type, " ", service, "/", name);
  absl::MutexLock lock(&mu_);
  std::unique_ptr<GrpcMethod>& method = methods_[key];
  if (method != nullptr) return method.get();
  method = std::make_unique<GrpcMethod>();
  method->type = type;
  method->service = std::move(service);
  method->method = std::move(name);
  const prometheus::Labels labels = {{"grpc_type", method->type},
                                     {"grpc_service", method->service},
                                     {"grpc_method", method->method}};
  method->started = &started_.Add(labels);
  method->msg_received = &msg_received_.Add(labels);
  method->msg_sent = &msg_sent_.Add(labels);
  method->handling_seconds = &handling_seconds_.Add(labels, HandlingBuckets());
  return method.get();
}

void Metrics::RecordHandled(const GrpcMethod& method, grpc::StatusCode code,
                            double seconds) {
  handled_
      .Add({{"grpc_type", method.type},
            {"grpc_service", method.service},
            {"grpc_method", method.method},
            {"grpc_code",
             absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}})
      .Increment();
  method.handling_seconds->Observe(seconds);
}

void Metrics::RecordBatch(int code, bool duplicate, absl::Duration latency) {
  const std::string outcome =
      code != 0   ? absl::AsciiStrToLower(absl::StatusCodeToString(
                        static_cast<absl::StatusCode>(code)))
      : duplicate ? "duplicate"
                  : "applied";
  batches_.Add({{"outcome", outcome}}).Increment();
  ack_latency_.Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::RecordGroupCommit(absl::Duration seconds, int64_t batches) {
  group_commit_seconds_.Observe(absl::ToDoubleSeconds(seconds));
  group_commit_batches_.Observe(static_cast<double>(batches));
}

std::string Metrics::Text() {
  absl::MutexLock lock(&mu_);
  const Gauges g = gauges_();
  sessions_.Set(static_cast<double>(g.sessions));
  state_bytes_.Set(static_cast<double>(g.state_bytes));
  pending_bytes_.Set(static_cast<double>(g.pending_bytes));
  budget_bytes_.Set(static_cast<double>(g.memory_budget_bytes));
  budget_used_bytes_.Set(static_cast<double>(g.memory_budget_used_bytes));
  resident_bytes_.Set(static_cast<double>(ResidentBytes()));
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace cka::server
