// Engine: the session map, idempotent creation, and adding rebuilt sessions.
#include "cka/core/engine.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

TEST(EngineTest, CreateIsIdempotentForEqualConfig) {
  Engine engine;
  bool created = false;
  auto first = engine.CreateSession("s1", {}, &created);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(created);
  // The default config and the explicit default measures are the same config.
  SessionConfig explicit_default;
  explicit_default.measures = DefaultMeasures();
  auto second = engine.CreateSession("s1", explicit_default, &created);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(created);
  EXPECT_EQ(first->get(), second->get());
}

TEST(EngineTest, CreateWithConflictingConfigIsAlreadyExists) {
  Engine engine;
  ASSERT_TRUE(engine.CreateSession("s1", {}).ok());
  SessionConfig other;
  other.step_bucket = 100;
  auto r = engine.CreateSession("s1", other);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
  EXPECT_NE(r.status().message().find("s1"), std::string::npos) << r.status();
}

TEST(EngineTest, BadIdOrConfigIsInvalidArgument) {
  Engine engine;
  EXPECT_EQ(engine.CreateSession("", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.CreateSession(std::string(257, 'x'), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  SessionConfig bad;
  bad.step_bucket = -1;
  EXPECT_EQ(engine.CreateSession("ok", bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(engine.ListSessions().empty());
}

TEST(EngineTest, MaxSessionsIsResourceExhausted) {
  EngineLimits limits;
  limits.max_sessions = 2;
  Engine engine(limits);
  ASSERT_TRUE(engine.CreateSession("a", {}).ok());
  ASSERT_TRUE(engine.CreateSession("b", {}).ok());
  EXPECT_TRUE(
      engine.CreateSession("a", {}).ok());  // existing: not a new session
  EXPECT_EQ(engine.CreateSession("c", {}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(EngineTest, GetAndDeleteUnknownAreNotFound) {
  Engine engine;
  auto got = engine.GetSession("nope");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find("nope"), std::string::npos)
      << got.status();
  EXPECT_EQ(engine.DeleteSession("nope").code(), absl::StatusCode::kNotFound);
}

// No session has an id over kMaxNameBytes: such an id is refused as invalid,
// and the message quotes only its start (a crafted megabyte id must not travel
// back whole in the status).
TEST(EngineTest, OverlongIdIsInvalidArgumentQuotingItsStart) {
  Engine engine;
  const std::string id(1 << 20, 'x');
  auto got = engine.GetSession(id);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(got.status().message().size(), 200u) << got.status();
  EXPECT_NE(got.status().message().find("1048576 bytes"), std::string::npos)
      << got.status();
  const absl::Status deleted = engine.DeleteSession(id);
  EXPECT_EQ(deleted.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(deleted.message().size(), 200u);
}

TEST(EngineTest, DeletedSessionIsGoneButPointerStaysValid) {
  Engine engine;
  auto s = engine.CreateSession("s1", {});
  ASSERT_TRUE(s.ok());
  std::shared_ptr<Session> held = *s;
  ASSERT_TRUE(engine.DeleteSession("s1").ok());
  EXPECT_EQ(engine.GetSession("s1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine.DeleteSession("s1").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(held->Info().batches_applied, 0);  // still usable
  bool created = false;
  ASSERT_TRUE(engine.CreateSession("s1", {}, &created).ok());
  EXPECT_TRUE(created);
}

TEST(EngineTest, ListSessionsIsSorted) {
  Engine engine;
  for (const char* id : {"zeta", "alpha", "mid"})
    ASSERT_TRUE(engine.CreateSession(id, {}).ok());
  EXPECT_EQ(engine.ListSessions(),
            (std::vector<std::string>{"alpha", "mid", "zeta"}));
}

TEST(EngineTest, ConcurrentCreatesMakeExactlyOneSession) {
  Engine engine;
  std::atomic<int> created_count{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      bool created = false;
      auto r = engine.CreateSession("shared", {}, &created);
      EXPECT_TRUE(r.ok()) << r.status();
      if (created) ++created_count;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(created_count.load(), 1);
  EXPECT_EQ(engine.ListSessions().size(), 1u);
}

}  // namespace
}  // namespace cka::core::testing

namespace cka::core::testing {
namespace {

TEST(EngineAddSessionTest, AddsARebuiltSessionAndRefusesATakenId) {
  Engine engine;
  auto original = Session::Create({});
  ASSERT_TRUE(original.ok());
  std::map<std::string, std::string> records;
  for (const StateRecord& r : (*original)->AllRecords().records) {
    records[r.key] = r.value;
  }
  auto rebuilt = Session::FromRecords(records);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  ASSERT_TRUE(engine.AddSession("s1", *std::move(rebuilt)).ok());
  EXPECT_TRUE(engine.GetSession("s1").ok());
  auto again = Session::FromRecords(records);
  ASSERT_TRUE(again.ok());
  const absl::Status taken = engine.AddSession("s1", *std::move(again));
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists) << taken;
  auto bad = Session::FromRecords(records);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(engine.AddSession("", *std::move(bad)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cka::core::testing
