#include "server/listen_address.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

struct HostCase {
  std::string listen;
  std::string host;  // what ListenHost returns
  bool loopback;
};

TEST(ListenAddressTest, HostsAreLoopbackOnlyWhenTheyReachOnlyThisMachine) {
  const HostCase cases[] = {
      {"127.0.0.1:50051", "127.0.0.1", true},
      {"127.255.3.4:0", "127.255.3.4", true},
      {"localhost:50051", "localhost", true},
      {"LocalHost:50051", "LocalHost", true},
      {"[::1]:50051", "[::1]", true},
      {"[0:0:0:0:0:0:0:1]:50051", "[0:0:0:0:0:0:0:1]", true},
      {"[::ffff:127.0.0.1]:50051", "[::ffff:127.0.0.1]", true},
      {"[::ffff:127.9.8.7]:0", "[::ffff:127.9.8.7]", true},
      {"[::ffff:7f00:1]:50051", "[::ffff:7f00:1]", true},
      {"ipv4:127.0.0.1:50051", "127.0.0.1", true},
      {"ipv6:[::1]:50051", "[::1]", true},
      // A name is not an address: "127.example.com" resolves wherever its DNS
      // says.
      {"127.example.com:50051", "127.example.com", false},
      {"127.0.0.1.nip.io:50051", "127.0.0.1.nip.io", false},
      {"localhost.example.com:50051", "localhost.example.com", false},
      // Short IPv4 forms are not judged (inet_pton reads only dotted quads):
      // ckad asks for security rather than guess.
      {"127.1:50051", "127.1", false},
      {"0.0.0.0:50051", "0.0.0.0", false},
      {"128.0.0.1:50051", "128.0.0.1", false},
      {"10.1.2.3:50051", "10.1.2.3", false},
      {"126.255.255.255:0", "126.255.255.255", false},
      {"127.0.0.256:0", "127.0.0.256", false},
      {"[::]:50051", "[::]", false},
      {"[::2]:50051", "[::2]", false},
      {"[::ffff:10.0.0.1]:50051", "[::ffff:10.0.0.1]", false},
      {"[::127.0.0.1]:50051", "[::127.0.0.1]", false},
      {"[fe80::1%lo]:50051", "[fe80::1%lo]", false},
      {"ckad.example.org:443", "ckad.example.org", false},
  };
  for (const HostCase& c : cases) {
    SCOPED_TRACE(c.listen);
    absl::StatusOr<std::string> host = ListenHost(c.listen);
    ASSERT_TRUE(host.ok()) << host.status();
    EXPECT_EQ(*host, c.host);
    EXPECT_EQ(IsLoopbackHost(*host), c.loopback);
  }
}

TEST(ListenAddressTest, MalformedListenIsInvalidArgumentNamingTheValue) {
  for (const char* listen :
       {"127.0.0.1", "127.0.0.1:", ":50051", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:http", "::1:50051", "[::1]", "[::1:50051", "::1]:50051",
        "[]:50051", "ipv4:", ""}) {
    SCOPED_TRACE(listen);
    absl::StatusOr<std::string> host = ListenHost(listen);
    ASSERT_FALSE(host.ok()) << *host;
    EXPECT_EQ(host.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(host.status().message().find("--listen"), std::string::npos)
        << host.status();
    EXPECT_NE(host.status().message().find(absl::StrCat("'", listen, "'")),
              std::string::npos)
        << host.status();
  }
}

TEST(ListenAddressTest, IsLoopbackHostNeedsBothBrackets) {
  EXPECT_FALSE(IsLoopbackHost("::1"));
  EXPECT_FALSE(IsLoopbackHost("[::1"));
  EXPECT_FALSE(IsLoopbackHost(""));
}

struct SecurityCase {
  const char* name;
  std::string listen;
  ListenSecurity security;
  bool accepted;
  // Each must appear in the refusal's message.
  std::vector<std::string> mentions;
};

TEST(ListenAddressTest, OtherMachinesAreServedOnlyWithTokensAndTlsOrAllowed) {
  const SecurityCase cases[] = {
      {"loopback needs nothing", "127.0.0.1:50051", {}, true, {}},
      {"localhost needs nothing", "localhost:0", {}, true, {}},
      {"IPv6 loopback needs nothing", "[::1]:0", {}, true, {}},
      {"any address with tokens and TLS is accepted",
       "0.0.0.0:50051",
       {.auth_tokens = true, .tls = true},
       true,
       {}},
      {"any address with --allow-insecure is accepted",
       "0.0.0.0:50051",
       {.allow_insecure = true},
       true,
       {}},
      {"tokens without TLS are accepted with --allow-insecure",
       "[::]:50051",
       {.auth_tokens = true, .allow_insecure = true},
       true,
       {}},
      {"any address without either is refused",
       "0.0.0.0:0",
       {},
       false,
       {"--listen '0.0.0.0:0'", "'0.0.0.0'", "--auth-tokens", "--tls-cert",
        "--tls-key", "--allow-insecure", "neither"}},
      {"tokens without TLS are refused",
       "10.0.0.5:50051",
       {.auth_tokens = true},
       false,
       {"'10.0.0.5'", "give --tls-cert and --tls-key", "--allow-insecure"}},
      {"TLS without tokens is refused",
       "[::]:50051",
       {.tls = true},
       false,
       {"'[::]'", "give --auth-tokens", "--allow-insecure"}},
      {"a name starting with 127. is refused",
       "127.example.com:50051",
       {},
       false,
       {"'127.example.com'"}},
      {"a malformed address is refused as such",
       "0.0.0.0",
       {.allow_insecure = true},
       false,
       {"expected host:port"}},
  };
  for (const SecurityCase& c : cases) {
    SCOPED_TRACE(c.name);
    const absl::Status status = CheckListenSecurity(c.listen, c.security);
    if (c.accepted) {
      EXPECT_TRUE(status.ok()) << status;
      continue;
    }
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& m : c.mentions) {
      EXPECT_NE(status.message().find(m), std::string::npos)
          << m << " not in: " << status;
    }
  }
}

}  // namespace
}  // namespace cka::server
