// TokenTable parsing, Authorize, and the per-client stream quota.
#include "server/auth.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/stream_quota.h"

namespace cka::server {
namespace {

constexpr char kReader[] = "reader-token-0123456789";
constexpr char kWriter[] = "writer-token-0123456789";
constexpr char kAdmin[] = "admin-token-0123456789";

TokenTable Table() {
  absl::StatusOr<TokenTable> t = TokenTable::Parse(
      std::string("# tokens of the lab\n\n") + kReader + " reader\r\n" + "  " +
          kWriter + "\t writer  \n" + kAdmin + " admin",
      "tokens.txt");
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(TokenTableTest, CommentsBlankLinesAndWhitespaceAreAccepted) {
  const TokenTable t = Table();
  EXPECT_EQ(t.size(), 3u);
  ASSERT_TRUE(t.Find(kWriter).has_value());
  EXPECT_EQ(t.role(*t.Find(kWriter)), Role::kWriter);
  EXPECT_EQ(t.role(*t.Find(kAdmin)), Role::kAdmin);
  EXPECT_FALSE(t.Find("writer-token-012345678").has_value());    // a prefix
  EXPECT_FALSE(t.Find("writer-token-01234567890").has_value());  // longer
  EXPECT_FALSE(t.Find("").has_value());
}

struct BadTableCase {
  std::string text;
  std::vector<std::string> mentions;
};

TEST(TokenTableTest, BadLinesAreRefusedNamingTheLineButNotTheToken) {
  const BadTableCase cases[] = {
      {"# c\nlonely-token-0123456789\n", {"tokens.txt:2", "1 fields"}},
      {"a-token-0123456789abc reader extra\n", {"tokens.txt:1", "3 fields"}},
      {"\n\na-token-0123456789abc owner\n", {"tokens.txt:3", "'owner'"}},
      {"short reader\n", {"tokens.txt:1", "at least 16"}},
      {"a-token-0123456789abc reader\na-token-0123456789abc admin\n",
       {"tokens.txt:2", "second time"}},
      {"a-token-0123456789\x7f reader\n", {"tokens.txt:1", "printable"}},
      {"# only comments\n\n", {"no tokens"}},
      {"", {"no tokens"}},
  };
  for (const BadTableCase& c : cases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<TokenTable> t = TokenTable::Parse(c.text, "tokens.txt");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(t.status().message());
    for (const std::string& m : c.mentions)
      EXPECT_NE(message.find(m), std::string::npos) << message;
    EXPECT_EQ(message.find("a-token"), std::string::npos) << message;
  }
}

TEST(TokenTableTest, AMissingFileIsNotFound) {
  EXPECT_EQ(TokenTable::Load("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

struct AuthorizeCase {
  std::optional<std::string> header;
  Role needed;
  absl::StatusCode code;
};

TEST(AuthorizeTest, HeadersAndRolesGiveTheirCodes) {
  const TokenTable t = Table();
  const std::string bearer = "Bearer ";
  const AuthorizeCase cases[] = {
      {std::nullopt, Role::kReader, absl::StatusCode::kUnauthenticated},
      {"", Role::kReader, absl::StatusCode::kUnauthenticated},
      {"Bearer ", Role::kReader, absl::StatusCode::kUnauthenticated},
      {std::string("Basic ") + kAdmin, Role::kReader,
       absl::StatusCode::kUnauthenticated},
      {kAdmin, Role::kReader, absl::StatusCode::kUnauthenticated},
      {bearer + "nobody-0123456789abcdef", Role::kReader,
       absl::StatusCode::kUnauthenticated},
      {bearer + kReader, Role::kReader, absl::StatusCode::kOk},
      {bearer + kReader, Role::kWriter, absl::StatusCode::kPermissionDenied},
      {bearer + kWriter, Role::kWriter, absl::StatusCode::kOk},
      {bearer + kWriter, Role::kReader, absl::StatusCode::kOk},
      {bearer + kWriter, Role::kAdmin, absl::StatusCode::kPermissionDenied},
      {bearer + kAdmin, Role::kAdmin, absl::StatusCode::kOk},
      {std::string("bearer ") + kAdmin, Role::kAdmin, absl::StatusCode::kOk},
  };
  for (const AuthorizeCase& c : cases) {
    SCOPED_TRACE(c.header.value_or("(no header)"));
    std::optional<std::string_view> header;
    if (c.header.has_value()) header = *c.header;
    absl::StatusOr<Caller> caller = Authorize(t, header, c.needed, "Method");
    EXPECT_EQ(caller.status().code(), c.code) << caller.status();
    if (!caller.ok()) {
      const std::string message(caller.status().message());
      EXPECT_NE(message.find("Method"), std::string::npos);
      EXPECT_EQ(message.find("token-0123456789"), std::string::npos)
          << "a refusal must not echo the token: " << message;
    }
  }
}

TEST(StreamQuotaTest, EachClientHasItsOwnCountAndReleaseFreesAPlace) {
  StreamQuota quota(2);
  EXPECT_TRUE(quota.Acquire("a", "client a").ok());
  EXPECT_TRUE(quota.Acquire("a", "client a").ok());
  const absl::Status third = quota.Acquire("a", "client a");
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("--max-streams-per-client"),
            std::string::npos);
  EXPECT_TRUE(quota.Acquire("b", "client b").ok());
  quota.Release("a");
  EXPECT_EQ(quota.open("a"), 1);
  EXPECT_TRUE(quota.Acquire("a", "client a").ok());
  StreamQuota unlimited(0);
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(unlimited.Acquire("a", "a").ok());
}

TEST(StreamQuotaTest, PeerHostDropsThePort) {
  EXPECT_EQ(PeerHost("ipv4:10.0.0.7:51234"), "ipv4:10.0.0.7");
  EXPECT_EQ(PeerHost("ipv6:[::1]:5"), "ipv6:[::1]");
  EXPECT_EQ(PeerHost("unix:/tmp/sock"), "unix:/tmp/sock");
  EXPECT_EQ(PeerHost("ipv4:"), "ipv4:");
}

}  // namespace
}  // namespace cka::server
