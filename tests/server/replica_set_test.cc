#include "server/replica_set.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cka/server/server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

std::unique_ptr<Server> StartReplica() {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.threads = 1;
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::BuildAndStart(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::string Address(const Server& server) {
  return absl::StrCat("127.0.0.1:", server.port());
}

void CreateSession(const Server& server, const std::string& id) {
  auto stub = v1::Similarity::NewStub(
      grpc::CreateChannel(Address(server), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  v1::Session session;
  const grpc::Status status = stub->CreateSession(&context, request, &session);
  ASSERT_TRUE(status.ok()) << status.error_message();
}

absl::StatusOr<std::unique_ptr<ReplicaSet>> Create(const std::string& peers) {
  return ReplicaSet::Create(peers, grpc::InsecureChannelCredentials(), {});
}

std::vector<std::string> SessionIds(const ReplicaSessions& answer) {
  std::vector<std::string> ids;
  for (const v1::Session& s : answer.answer.sessions()) {
    ids.push_back(s.session_id());
  }
  return ids;
}

TEST(ReplicaSetTest, MalformedPeersAreInvalidArgumentNamingTheFlag) {
  std::vector<std::string> too_many;
  for (int i = 0; i <= ReplicaSet::kMaxReplicas; ++i) {
    too_many.push_back(absl::StrCat("10.0.0.", i % 250, ":", 1000 + i));
  }
  for (const std::string& peers :
       {std::string(""), std::string("ckad-0.ckad"), std::string("a:b"),
        std::string("a:1,,b:2"), std::string("a:0"), std::string("::1:50051"),
        std::string("a:70000"), absl::StrJoin(too_many, ",")}) {
    absl::StatusOr<std::unique_ptr<ReplicaSet>> set = Create(peers);
    ASSERT_FALSE(set.ok()) << peers;
    EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument) << peers;
    EXPECT_NE(set.status().message().find("--http-peers"), std::string::npos)
        << set.status();
  }
  EXPECT_TRUE(Create("a:1, [::1]:2 ,ckad-2.ckad:50051").ok());
}

TEST(ReplicaSetTest, ListsEveryReplicaAndNamesTheOnesThatDidNotAnswer) {
  std::unique_ptr<Server> first = StartReplica();
  std::unique_ptr<Server> second = StartReplica();
  std::unique_ptr<Server> gone = StartReplica();
  ASSERT_TRUE(first && second && gone);
  CreateSession(*first, "a");
  CreateSession(*first, "b");
  CreateSession(*second, "c");
  const std::string gone_address = Address(*gone);
  gone.reset();  // its port answers nothing now

  // ".invalid" never resolves (RFC 2606).
  absl::StatusOr<std::unique_ptr<ReplicaSet>> set = Create(absl::StrJoin(
      {Address(*first), gone_address,
       std::string("no-such-replica.invalid:50051"), Address(*second)},
      ","));
  ASSERT_TRUE(set.ok()) << set.status();
  for (int round = 0; round < 2; ++round) {  // the second reuses channels
    const std::vector<ReplicaSessions> answers =
        (*set)->ListSessions(std::nullopt);
    ASSERT_EQ(answers.size(), 4u);
    EXPECT_EQ(answers[0].replica, Address(*first));
    EXPECT_TRUE(answers[0].status.ok()) << answers[0].status.error_message();
    EXPECT_EQ(SessionIds(answers[0]), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(answers[1].replica, gone_address);
    EXPECT_EQ(answers[1].status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(answers[2].replica, "no-such-replica.invalid:50051");
    EXPECT_EQ(answers[2].status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(answers[2].status.error_message().find("cannot resolve"),
              std::string::npos)
        << answers[2].status.error_message();
    EXPECT_EQ(answers[3].replica, Address(*second));
    EXPECT_TRUE(answers[3].status.ok()) << answers[3].status.error_message();
    EXPECT_EQ(SessionIds(answers[3]), (std::vector<std::string>{"c"}));
  }
}

}  // namespace
}  // namespace cka::server
