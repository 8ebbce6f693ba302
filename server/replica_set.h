// The ckad replicas behind a router (--http-peers), asked together for what
// no single replica knows: every session.
#ifndef CKA_SERVER_REPLICA_SET_H_
#define CKA_SERVER_REPLICA_SET_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace cka::server {

// One replica's answer to ListSessions.
struct ReplicaSessions {
  // How the replica is named in answers: its --http-peers entry when the
  // entry resolved to one address, else "entry (address)".
  std::string replica;
  grpc::Status status;              // of the call, or of resolving the entry
  v1::ListSessionsResponse answer;  // when status is OK
};

// The replicas that --http-peers names: each entry "host:port" is resolved
// (getaddrinfo) at every ListSessions, so a host that resolves to every pod
// (a headless Service) follows pods that come and go, and a name that no
// longer resolves is reported, not skipped. Channels to the resolved
// addresses are kept for reuse. Thread-safe.
class ReplicaSet {
 public:
  // The most replicas one ListSessions asks; the addresses past it are
  // reported as not asked.
  static constexpr int kMaxReplicas = 64;
  // Deadline of each replica's ListSessions (they are asked at once).
  static constexpr absl::Duration kDeadline = absl::Seconds(5);

  // Parses `peers` ("host:port,host:port"; IPv6 hosts in brackets).
  // InvalidArgument naming --http-peers and the entry for an empty or
  // malformed entry or more than kMaxReplicas entries. `credentials` and
  // `arguments` make every channel (TLS and the expected server name).
  static absl::StatusOr<std::unique_ptr<ReplicaSet>> Create(
      absl::string_view peers,
      std::shared_ptr<grpc::ChannelCredentials> credentials,
      grpc::ChannelArguments arguments);

  // Resolves every entry and calls each address's ListSessions at once, with
  // `authorization` as the "authorization" metadata when given; returns when
  // all have answered or passed kDeadline. One ReplicaSessions per address
  // (per entry that did not resolve: UNAVAILABLE naming it), in the order of
  // the entries and of their addresses, plus one RESOURCE_EXHAUSTED entry
  // for the addresses past kMaxReplicas.
  std::vector<ReplicaSessions> ListSessions(
      const std::optional<std::string>& authorization);

 private:
  struct Entry {
    std::string text;  // as given: "host:port"
    std::string host;  // brackets removed
    std::string port;
  };
  ReplicaSet(std::vector<Entry> entries,
             std::shared_ptr<grpc::ChannelCredentials> credentials,
             grpc::ChannelArguments arguments)
      : entries_(std::move(entries)),
        credentials_(std::move(credentials)),
        arguments_(std::move(arguments)) {}

  // Returns the stub of `address` ("1.2.3.4:5" or "[::1]:5"), made once.
  std::shared_ptr<v1::Similarity::Stub> StubFor(const std::string& address);

  const std::vector<Entry> entries_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const grpc::ChannelArguments arguments_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<v1::Similarity::Stub>> stubs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace cka::server

#endif  // CKA_SERVER_REPLICA_SET_H_
