#include "server/replica_set.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/blocking_counter.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "server/listen_address.h"

namespace cka::server {
namespace {

// Returns the addresses `host` resolves to as "ip:port" ("[ip6]:port"),
// without repeats, in the resolver's order; UNAVAILABLE naming `entry` when
// it does not resolve.
absl::StatusOr<std::vector<std::string>> Resolve(const std::string& entry,
                                                 const std::string& host,
                                                 const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (error != 0) {
    return absl::UnavailableError(
        absl::StrCat("--http-peers entry '", entry,
                     "': cannot resolve: ", gai_strerror(error)));
  }
  std::vector<std::string> addresses;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof ip, nullptr, 0,
                    NI_NUMERICHOST) != 0) {
      continue;
    }
    std::string address = a->ai_family == AF_INET6
                              ? absl::StrCat("[", ip, "]:", port)
                              : absl::StrCat(ip, ":", port);
    if (std::find(addresses.begin(), addresses.end(), address) ==
        addresses.end()) {
      addresses.push_back(std::move(address));
    }
  }
  freeaddrinfo(found);
  if (addresses.empty()) {
    return absl::UnavailableError(absl::StrCat("--http-peers entry '", entry,
                                               "': resolves to no address"));
  }
  return addresses;
}

grpc::Status GrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReplicaSet>> ReplicaSet::Create(
    absl::string_view peers,
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    grpc::ChannelArguments arguments) {
  std::vector<Entry> entries;
  for (absl::string_view text : absl::StrSplit(peers, ',')) {
    text = absl::StripAsciiWhitespace(text);
    absl::StatusOr<std::string> host = ListenHost(text, "--http-peers");
    if (!host.ok()) return host.status();
    absl::string_view bare = *host;
    if (absl::ConsumePrefix(&bare, "[")) absl::ConsumeSuffix(&bare, "]");
    std::string port(text.substr(text.rfind(':') + 1));
    if (port == "0") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--http-peers '", text, "': port 0; expected a replica's port"));
    }
    entries.push_back({std::string(text), std::string(bare), std::move(port)});
  }
  if (entries.size() > kMaxReplicas) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http-peers: ", entries.size(), " entries; at most ", kMaxReplicas));
  }
  return std::unique_ptr<ReplicaSet>(new ReplicaSet(
      std::move(entries), std::move(credentials), std::move(arguments)));
}

std::shared_ptr<v1::Similarity::Stub> ReplicaSet::StubFor(
    const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<v1::Similarity::Stub>& stub = stubs_[address];
  if (stub == nullptr) {
    // Pods come and go with new addresses: forget the channels of old ones
    // before they pile up.
    if (stubs_.size() > 4 * kMaxReplicas) {
      stubs_.clear();
      return StubFor(address);
    }
    stub = v1::Similarity::NewStub(
        grpc::CreateCustomChannel(address, credentials_, arguments_));
  }
  return stub;
}

std::vector<ReplicaSessions> ReplicaSet::ListSessions(
    const std::optional<std::string>& authorization) {
  std::vector<ReplicaSessions> answers;
  std::vector<std::string> addresses;  // of answers[i], "" if not asked
  int asked = 0;
  int past_limit = 0;
  for (const Entry& entry : entries_) {
    absl::StatusOr<std::vector<std::string>> resolved =
        Resolve(entry.text, entry.host, entry.port);
    if (!resolved.ok()) {
      answers.push_back({entry.text, GrpcStatus(resolved.status()), {}});
      addresses.emplace_back();
      continue;
    }
    for (const std::string& address : *resolved) {
      if (asked == kMaxReplicas) {
        ++past_limit;
        continue;
      }
      ++asked;
      answers.push_back({resolved->size() == 1
                             ? entry.text
                             : absl::StrCat(entry.text, " (", address, ")"),
                         grpc::Status::OK,
                         {}});
      addresses.push_back(address);
    }
  }

  struct Call {
    std::shared_ptr<v1::Similarity::Stub> stub;
    grpc::ClientContext context;
    v1::ListSessionsRequest request;
  };
  // Safe to destroy once Wait returns, unlike a mutex a callback unlocks.
  absl::BlockingCounter answered(asked);
  std::vector<std::unique_ptr<Call>> calls(answers.size());
  for (size_t i = 0; i < answers.size(); ++i) {
    if (addresses[i].empty()) continue;
    calls[i] = std::make_unique<Call>();
    Call& call = *calls[i];
    call.stub = StubFor(addresses[i]);
    call.context.set_deadline(std::chrono::system_clock::now() +
                              absl::ToChronoMilliseconds(kDeadline));
    if (authorization.has_value()) {
      call.context.AddMetadata("authorization", *authorization);
    }
    ReplicaSessions* answer = &answers[i];
    call.stub->async()->ListSessions(&call.context, &call.request,
                                     &answer->answer,
                                     [&answered, answer](grpc::Status status) {
                                       answer->status = std::move(status);
                                       answered.DecrementCount();
                                     });
  }
  answered.Wait();
  if (past_limit > 0) {
    answers.push_back(
        {absl::StrCat(past_limit, " more addresses"),
         grpc::Status(
             grpc::StatusCode::RESOURCE_EXHAUSTED,
             absl::StrCat("--http-peers resolves to more than ", kMaxReplicas,
                          " replicas; these were not asked")),
         {}});
  }
  return answers;
}

}  // namespace cka::server
