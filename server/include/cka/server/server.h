// The ckad server: the cka.v1.Similarity gRPC service over a cka::core::Engine.
#ifndef CKA_SERVER_SERVER_H_
#define CKA_SERVER_SERVER_H_

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
  int threads = 0;        // worker pool size; 0 = hardware concurrency
  int max_message_mb = 64;
  core::EngineLimits limits;
  absl::Duration shutdown_grace = absl::Seconds(10);
};

// A running server. Thread-safe.
class Server {
 public:
  // Starts serving on options.listen. InvalidArgument for bad options;
  // Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(
      const ServerOptions& options);
  virtual ~Server() = default;

  // Returns the bound port (useful with port 0).
  virtual int port() const = 0;
  // Health goes NOT_SERVING, in-flight batches finish and are acked, then the
  // server stops; waits at most the grace period. Idempotent.
  virtual void Shutdown() = 0;
  // Blocks until Shutdown() completes.
  virtual void Wait() = 0;
  // Returns the engine (for tests that compare against the core's own answer).
  virtual core::Engine& engine() = 0;
};

}  // namespace cka::server

#endif  // CKA_SERVER_SERVER_H_
