// The ckad server: the cka.v1.Similarity gRPC service over a cka::core::Engine.
#ifndef CKA_SERVER_SERVER_H_
#define CKA_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cka/core/engine.h"

namespace cka::server {

// Everything ckad's flags can set.
struct ServerOptions {
  std::string listen =
      "127.0.0.1:50051";  // host:port; port 0 picks a free port
  std::string data_dir;   // empty: state in memory only
  // host:port of the HTTP server (the JSON API over the same service,
  // /metrics, /healthz; port 0 picks a free port); empty: no HTTP. It has the
  // same security as `listen`: the same tokens and TLS files, and the same
  // rule for a host other than loopback.
  std::string http_listen;
  // Scale-out behind the router (deploy/README.md). http_grpc_target
  // (host:port, the router's gRPC address): the HTTP layer makes its gRPC
  // calls there, each with the metadata "x-cka-session" of its session, so
  // that they reach the replica holding it; empty: ckad's own service, in
  // process. http_peers ("host:port,host:port", a host may resolve to several
  // addresses, resolved at each request): the JSON ListSessions asks every
  // replica and merges their answers; empty: it asks http_grpc_target (or
  // ckad itself). Both speak TLS when ckad serves TLS or http_grpc_ca_file is
  // set, trusting http_grpc_ca_file (PEM; empty: gRPC's default roots) and
  // expecting the certificate to name http_grpc_server_name; with
  // tls_client_ca_file they present tls_cert_file as client certificate.
  std::string http_grpc_target;
  std::string http_peers;
  std::string http_grpc_ca_file;
  std::string http_grpc_server_name = "ckad";
  int threads = 0;  // worker pool size; 0 = hardware concurrency
  // Tests only, no flag: the registered SQLite VFS that does data_dir's file
  // I/O (empty: SQLite's default), e.g. one that injects disk faults.
  std::string sqlite_vfs;
  int max_message_mb = 64;
  // The process-wide memory budget every request draws from, in MiB; 0: derived
  // from the cgroup limit, physical memory and RLIMIT_AS
  // (core::MemoryBudget::DefaultLimitBytes). limits.session.memory, when set,
  // is used instead.
  int64_t memory_limit_mb = 0;
  core::EngineLimits limits;
  absl::Duration shutdown_grace = absl::Seconds(10);

  // Hardening. Limits of 0 are "no limit".
  int64_t max_pending_total_bytes = int64_t{4} << 30;  // all join buffers
  int max_streams_per_client = 128;  // per token, or per peer address
  // Keepalive: ping a client after keepalive_time without traffic and drop
  // the connection when no answer comes within keepalive_timeout; accept the
  // client's own pings no more often than min_client_ping_interval.
  absl::Duration keepalive_time = absl::Seconds(60);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  // Close connections without calls after max_connection_idle, and every
  // connection after max_connection_age plus max_connection_age_grace for
  // its calls to end. InfiniteDuration: never.
  absl::Duration max_connection_idle = absl::Minutes(30);
  absl::Duration max_connection_age = absl::InfiniteDuration();
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  // Files. auth_tokens: "token role" lines (see server/auth.h); empty: no
  // authentication. tls_cert + tls_key (PEM): serve TLS; tls_client_ca (PEM)
  // as well: require client certificates signed by it (mutual TLS).
  std::string auth_tokens_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // A listen host other than loopback needs auth_tokens_file and TLS;
  // allow_insecure starts without them (with a warning), for a private
  // network where that is intended.
  bool allow_insecure = false;
};

// A running server. Thread-safe.
class Server {
 public:
  // Starts serving on options.listen. InvalidArgument for bad options, and
  // for a non-loopback listen host without both auth_tokens_file and TLS
  // unless allow_insecure; Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(
      const ServerOptions& options);
  virtual ~Server() = default;

  // Returns the bound port (useful with port 0).
  virtual int port() const = 0;
  // Returns the bound port of http_listen, 0 without it.
  virtual int http_port() const = 0;
  // Health goes NOT_SERVING, in-flight batches finish and are acked, then the
  // server stops; waits at most the grace period. Idempotent.
  virtual void Shutdown() = 0;
  // Blocks until Shutdown() completes.
  virtual void Wait() = 0;
  // Returns the engine (for tests that compare against the core's own answer).
  virtual core::Engine& engine() = 0;
  // Returns the number of batch messages read from all streams so far: it
  // grows while ckad ingests. Thread-safe.
  virtual int64_t batches_received() const = 0;
};

}  // namespace cka::server

#endif  // CKA_SERVER_SERVER_H_
