// The C++ client of the cka.v1.Similarity service: sessions, queries, watches
// and health.
//
// Every call returns absl::Status / absl::StatusOr; no exception leaves the
// library. A gRPC error becomes an absl::Status with the same code and the
// server's message. Every unary call carries a deadline
// (ClientOptions::default_deadline unless the call is given one).
//
// Thread safety: a Client is thread-safe; calls may be made from any number of
// threads.
#ifndef CKA_CLIENT_CLIENT_H_
#define CKA_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "cka/v1/similarity.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace cka::client {

// How a Client reaches the server.
struct ClientOptions {
  std::string server = "127.0.0.1:50051";  // host:port
  // Deadline of a unary call that is not given its own.
  absl::Duration default_deadline = absl::Seconds(10);
  // Largest message sent or received, in bytes. Must not exceed the server's
  // --max-message-mb for sends to succeed; ActivationStreamer refuses larger
  // batches before sending them.
  int64_t max_message_bytes = int64_t{64} << 20;
  // A non-empty token is sent as "authorization: Bearer <token>" metadata
  // on every call (ckad's --auth-tokens).
  std::string bearer_token;
  // TLS. use_tls selects it; the server's certificate is checked against
  // tls_root_certs (PEM; empty: the system's roots) and the name
  // tls_server_name (empty: the host of `server`). tls_client_cert and
  // tls_client_key (PEM, both or neither) present a client certificate
  // (mutual TLS). The tls_* fields need use_tls.
  bool use_tls = false;
  std::string tls_root_certs;
  std::string tls_client_cert;
  std::string tls_client_key;
  std::string tls_server_name;
  // Keepalive: ping the server after keepalive_time without traffic while a
  // call is open and give the connection up when no answer comes within
  // keepalive_timeout. keepalive_time must not be below the server's
  // --min-ping-interval-s (10 s by default), or the server disconnects.
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
};

// The gRPC metadata key that carries the session id of every call that has
// one (deploy/README.md: the router hashes on it).
inline constexpr char kSessionMetadataKey[] = "x-cka-session";

// The trailing metadata key of every GetSimilarity answer: the milliseconds
// ckad spent on it, from queueing the query to its converted matrix (what is
// not in it is transport, serialisation and waiting for the CPU).
inline constexpr char kServerTimeMetadataKey[] = "x-cka-server-time-ms";

// The standard gRPC health states
// (grpc.health.v1.HealthCheckResponse.ServingStatus).
enum class ServingStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3
};

// Returns "UNKNOWN", "SERVING", "NOT_SERVING" or "SERVICE_UNKNOWN".
const char* ServingStatusName(ServingStatus status);

// A running WatchSimilarity call read one matrix at a time (the iterator style
// of watching). Not thread-safe, except Cancel(), which may be called from any
// thread.
class SimilarityWatch {
 public:
  virtual ~SimilarityWatch() = default;
  // Blocks until the next matrix arrives and stores it in *matrix; returns
  // false when the stream has ended (then call Finish()).
  virtual bool Next(v1::SimilarityMatrix* matrix) = 0;
  // Ends the watch early; a blocked Next() returns false.
  virtual void Cancel() = 0;
  // Returns the final status of the call once Next() has returned false. A
  // watch ended by Cancel() returns Cancelled.
  virtual absl::Status Finish() = 0;
};

class Client {
 public:
  // Returns a client for options.server. Does not connect: the first call does.
  // InvalidArgument for an empty address, a non-positive deadline, message
  // size or keepalive, tls_* fields without use_tls, or only one of
  // tls_client_cert and tls_client_key.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Creates session `session_id` with `config`. Idempotent for an equal config;
  // AlreadyExists when the id exists with another config; InvalidArgument for a
  // bad config.
  absl::StatusOr<v1::Session> CreateSession(
      const std::string& session_id, const v1::SessionConfig& config,
      std::optional<absl::Duration> timeout = {});
  // Returns session `session_id` with its counters; NotFound when there is
  // none.
  absl::StatusOr<v1::Session> GetSession(
      const std::string& session_id,
      std::optional<absl::Duration> timeout = {});
  // Returns every session.
  absl::StatusOr<std::vector<v1::Session>> ListSessions(
      std::optional<absl::Duration> timeout = {});
  // Deletes session `session_id`; NotFound when there is none.
  absl::Status DeleteSession(const std::string& session_id,
                             std::optional<absl::Duration> timeout = {});

  // Returns the CKA matrix for `query` (values row-major rows × cols, NaN = no
  // value; standard_errors in the same layout, NaN = none), with each source's
  // blocks of alike layers when query.block_threshold is set.
  absl::StatusOr<v1::SimilarityMatrix> GetSimilarity(
      const v1::GetSimilarityRequest& query,
      std::optional<absl::Duration> timeout = {});

  // Returns, for the pairs of `query`, the CKA of each step bucket on its own
  // (buckets ascending; values[p] and standard_errors[p] per pair, NaN = no
  // value or no SE).
  absl::StatusOr<v1::SimilaritySeries> GetSimilaritySeries(
      const v1::GetSimilaritySeriesRequest& query,
      std::optional<absl::Duration> timeout = {});

  // Watches the matrix of `request`, calling `on_update` on the calling thread
  // for the first matrix and for every change, until `on_update` returns false
  // (then OK), the stream ends, or `timeout` passes (then OK: a watch that ran
  // its course is not an error). Returns the server's error otherwise (NotFound
  // for an unknown session, ...).
  absl::Status WatchSimilarity(
      const v1::WatchSimilarityRequest& request,
      const std::function<bool(const v1::SimilarityMatrix&)>& on_update,
      std::optional<absl::Duration> timeout = {});
  // Starts a watch read with SimilarityWatch::Next. No deadline unless
  // `timeout` is given.
  std::unique_ptr<SimilarityWatch> StartWatch(
      const v1::WatchSimilarityRequest& request,
      std::optional<absl::Duration> timeout = {});

  // Asks the standard gRPC health service about `service` ("" = the whole
  // server). Returns the server's status, NotFound when the server does not
  // know `service`, or the transport error (Unavailable when nothing listens,
  // DeadlineExceeded, ...).
  absl::StatusOr<ServingStatus> Health(
      const std::string& service = "",
      std::optional<absl::Duration> timeout = {});

  // Returns the options and the channel (shared with every ActivationStreamer
  // made from this client; the channel outlives the client as long as one holds
  // it).
  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // Sets the deadline and the metadata of `options` on `context`: the helper
  // every call of the library uses. A zero `timeout` sets no deadline. A
  // non-empty `session_id` is sent as metadata kSessionMetadataKey, so that a
  // router can send all of a session's calls to the replica that holds it.
  static void PrepareContext(const ClientOptions& options,
                             absl::Duration timeout,
                             grpc::ClientContext* context,
                             const std::string& session_id = "");

 private:
  Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel);

  absl::Duration TimeoutOr(std::optional<absl::Duration> timeout) const;

  const ClientOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Similarity::Stub> stub_;
};

// Returns a channel to options.server with the message size limits,
// keepalive and TLS settings of `options`.
std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& options);

}  // namespace cka::client

#endif  // CKA_CLIENT_CLIENT_H_
