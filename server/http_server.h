// ckad's HTTP server (--http-listen): the JSON API over the cka.v1.Similarity
// service, /metrics and /healthz.
#ifndef CKA_SERVER_HTTP_SERVER_H_
#define CKA_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cka/core/memory_budget.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/channel.h"
#include "server/auth.h"

namespace httplib {
class DataSink;
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace cka::server {

class ReplicaSet;
class SimilarityEventStream;

// What the HTTP server serves and how.
struct HttpServerOptions {
  std::string listen;  // host:port (port 0 picks a free one)
  // PEM files: serve HTTPS with the gRPC server's certificate and key;
  // tls_client_ca as well: require client certificates signed by it.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Null: no authentication. Otherwise /metrics needs a reader's bearer
  // token; the API's calls are judged by the service itself. Must outlive the
  // server.
  const TokenTable* tokens = nullptr;
  // Returns /metrics' body in Prometheus' text format; null: /metrics is 404.
  std::function<std::string()> metrics_text;
  // Null: /api/v1/sessions is the channel's ListSessions. Otherwise it asks
  // every replica of the set (forwarding the Authorization header) and merges
  // their answers: {"sessions": [... each with "replica"], "replicas":
  // [{"replica", "sessions"}], "unanswered": [{"replica", "code",
  // "message"}], "message": "..." when some did not answer}; when none
  // answered, the error of their common code (else UNAVAILABLE) naming each.
  std::shared_ptr<ReplicaSet> replicas;
  // The memory budget (ckad's, --memory-limit-mb) that a similarity matrix or
  // series answer is drawn from while its JSON is built and sent
  // (JsonAnswerBytes, server/answer_memory.h); over it the answer is
  // RESOURCE_EXHAUSTED (429). Null: not priced.
  std::shared_ptr<core::MemoryBudget> memory;
};

// Serves the JSON API by calling the gRPC service through `channel` (an
// in-process channel of ckad's own server, or the router in front of the
// replicas): every request becomes the gRPC call it stands for, with its
// "Authorization" header as the call's "authorization" metadata and its
// session id as "x-cka-session" (the router's hash key), so that validation,
// authentication, budgets and errors are those of the session's replica.
// Answers are the response messages in protobuf's JSON mapping (proto field
// names, default values printed); errors are HttpStatusOf(code) with
// ErrorJson(code, message).
//
// Routes (GET and HEAD only; the path's segments are URL-decoded):
//   /api/v1/sessions                    ListSessions (of every replica
//                                       with HttpServerOptions::replicas)
//   /api/v1/sessions/{id}               GetSession
//   /api/v1/sessions/{id}/similarity    GetSimilarity
//                                       (SimilarityRequestFromQuery)
//   /api/v1/sessions/{id}/series        GetSimilaritySeries
//                                       (SeriesRequestFromQuery)
//   /metrics                            HttpServerOptions::metrics_text
//   /healthz                            200 "ok", no authentication
//   /, /index.html, /main.js, ...       the page (FindWebAsset), no
//                                       authentication, with its
//                                       Content-Security-Policy
// anything else is 404.
//
// What a request can cost is bounded: kThreads workers, kMaxQueuedConnections
// accepted connections waiting for them, httplib's 8 KiB limits on the
// request line and on each header line (414, 400), kMaxBodyBytes of body
// (413), kIdleSeconds of silence while a request is read or an idle
// keep-alive connection waits, kMaxRequestsPerConnection, and
// kMaxEventStreams open event streams (each holds a worker; one more is 429).
//
// Thread-safe. `channel`'s server must keep serving until Stop returns.
class HttpServer {
 public:
  static constexpr int kThreads = 16;
  static constexpr int kMaxEventStreams = 8;
  // How often an event stream looks for a gone client and for Stop.
  static constexpr absl::Duration kEventTick = absl::Seconds(1);
  static constexpr absl::Duration kKeepAliveComment = absl::Seconds(15);
  static constexpr int kMaxQueuedConnections = 64;
  static constexpr size_t kMaxBodyBytes = 64 << 10;
  static constexpr int kIdleSeconds = 5;
  static constexpr int kMaxRequestsPerConnection = 100;
  // Deadline of the gRPC call a request makes.
  static constexpr int kCallDeadlineSeconds = 60;

  // Binds options.listen and starts serving; logs "http listening on
  // HOST:PORT". InvalidArgument for a malformed address or unreadable TLS
  // files, Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      HttpServerOptions options, std::shared_ptr<grpc::Channel> channel);
  // Calls Stop().
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Returns the bound port.
  int port() const { return port_; }
  // Stops accepting, ends the event streams (with an UNAVAILABLE error
  // event, within kEventTick), lets the requests being served finish, and
  // joins the threads. Idempotent.
  void Stop();

 private:
  HttpServer(HttpServerOptions options, std::shared_ptr<grpc::Channel> channel);

  // Answers one request (every route; httplib's router is not used).
  void Dispatch(const httplib::Request& request, httplib::Response& response);
  void ServeMetrics(const httplib::Request& request,
                    httplib::Response& response);
  // /api/v1/sessions with options_.replicas.
  void ServeReplicaSessions(const httplib::Request& request,
                            httplib::Response& response);
  void ServeWatch(const std::string& session_id,
                  const httplib::Request& request, httplib::Response& response);
  // Writes `event` and every later one of `stream` to `sink` until the call
  // ends (true), the client goes (false) or Stop.
  bool StreamEvents(SimilarityEventStream& stream, std::string event,
                    httplib::DataSink& sink);

  const HttpServerOptions options_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  std::thread listener_;
  std::atomic<bool> listener_exited_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<int> event_streams_{0};
};

}  // namespace cka::server

#endif  // CKA_SERVER_HTTP_SERVER_H_
