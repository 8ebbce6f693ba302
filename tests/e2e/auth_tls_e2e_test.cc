// Authentication, roles, TLS and mutual TLS, and which of them a listen
// address beyond loopback needs: the real server in-process on 127.0.0.1:0
// (0.0.0.0:0 for the latter), the real client library, certificates made at
// test time by openssl in a temporary directory.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cka/client/activation_streamer.h"
#include "cka/client/client.h"
#include "cka/server/server.h"
#include "test_util.h"

namespace cka::testing {
namespace {

constexpr char kReaderToken[] = "reader-token-0123456789abcdef";
constexpr char kWriterToken[] = "writer-token-0123456789abcdef";
constexpr char kAdminToken[] = "admin-token-0123456789abcdef";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::unique_ptr<client::Client> Connect(client::ClientOptions options,
                                        int port) {
  if (options.server == "127.0.0.1:50051")
    options.server = absl::StrCat("127.0.0.1:", port);
  options.default_deadline = absl::Seconds(10);
  absl::StatusOr<std::unique_ptr<client::Client>> c =
      client::Client::Create(options);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

client::ClientOptions WithToken(const std::string& token) {
  client::ClientOptions options;
  options.bearer_token = token;
  return options;
}

v1::SessionConfig LinearConfig() {
  v1::SessionConfig config;
  v1::Measure* m = config.add_measures();
  m->set_name("lin");
  m->set_kernel(v1::LINEAR);
  m->set_estimator(v1::UNBIASED);
  return config;
}

// Streams one batch through an ActivationStreamer and returns the code it
// ended with (OK when acked).
absl::StatusCode StreamOneBatch(const client::Client& c,
                                const std::string& session) {
  client::StreamerOptions options;
  options.session_id = session;
  options.source = "m";
  options.initial_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> streamer =
      client::ActivationStreamer::Create(c, options);
  EXPECT_TRUE(streamer.ok()) << streamer.status();
  if (!streamer.ok()) return absl::StatusCode::kInternal;
  Activations a = RandomActivations(8, 4, 1);
  client::Batch batch("auth/1", 0);
  batch.AddActivations("a", std::move(a.x), {a.n, a.d});
  EXPECT_TRUE((*streamer)->Submit(std::move(batch)).ok());
  absl::StatusOr<std::vector<client::BatchError>> errors =
      (*streamer)->Close(absl::Now() + absl::Seconds(20));
  EXPECT_TRUE(errors.ok()) << errors.status();
  if (!errors.ok()) return errors.status().code();
  if (errors->empty()) return absl::StatusCode::kOk;
  return errors->front().code;
}

class AuthE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("auth");
    const std::string tokens = dir_ + "/tokens";
    WriteFile(tokens, absl::StrCat("# token role\n\n", kReaderToken,
                                   " reader\n", kWriterToken, "\twriter\n",
                                   "  ", kAdminToken, " admin  \n"));
    server::ServerOptions options;
    options.auth_tokens_file = tokens;
    server_ = StartServer(options);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::unique_ptr<client::Client> As(const std::string& token) {
    return Connect(WithToken(token), server_->port());
  }

  std::string dir_;
  std::unique_ptr<server::Server> server_;
};

TEST_F(AuthE2eTest, EveryCallWithoutATokenIsUnauthenticated) {
  std::unique_ptr<client::Client> anonymous = As("");
  EXPECT_EQ(anonymous->ListSessions().status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->GetSession("s").status().code(),
            absl::StatusCode::kUnauthenticated);
  absl::StatusOr<v1::Session> created =
      anonymous->CreateSession("s", LinearConfig());
  EXPECT_EQ(created.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(created.status().message().find("authorization"), std::string::npos)
      << created.status();
  EXPECT_EQ(anonymous->DeleteSession("s").code(),
            absl::StatusCode::kUnauthenticated);
  v1::GetSimilarityRequest query;
  query.set_session_id("s");
  EXPECT_EQ(anonymous->GetSimilarity(query).status().code(),
            absl::StatusCode::kUnauthenticated);
  v1::WatchSimilarityRequest watch;
  *watch.mutable_query() = query;
  EXPECT_EQ(anonymous
                ->WatchSimilarity(
                    watch, [](const v1::SimilarityMatrix&) { return true; },
                    absl::Seconds(5))
                .code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(StreamOneBatch(*anonymous, "s"),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthE2eTest, AWrongTokenIsUnauthenticatedAndNotEchoed) {
  const std::string wrong = "writer-token-0123456789abcdeX";
  std::unique_ptr<client::Client> stranger = As(wrong);
  absl::StatusOr<std::vector<v1::Session>> listed = stranger->ListSessions();
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(listed.status().message().find(wrong), std::string::npos);
  EXPECT_EQ(StreamOneBatch(*stranger, "s"), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthE2eTest, HealthNeedsNoToken) {
  absl::StatusOr<client::ServingStatus> health = As("")->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::ServingStatus::kServing);
}

TEST_F(AuthE2eTest, AReaderMayQueryButNotCreateStreamOrDelete) {
  ASSERT_TRUE(As(kWriterToken)->CreateSession("s", LinearConfig()).ok());
  std::unique_ptr<client::Client> reader = As(kReaderToken);
  EXPECT_TRUE(reader->ListSessions().ok());
  EXPECT_TRUE(reader->GetSession("s").ok());
  v1::GetSimilarityRequest query;
  query.set_session_id("s");
  EXPECT_TRUE(reader->GetSimilarity(query).ok());
  absl::StatusOr<v1::Session> created =
      reader->CreateSession("t", LinearConfig());
  EXPECT_EQ(created.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(created.status().message().find("writer"), std::string::npos)
      << created.status();
  EXPECT_EQ(StreamOneBatch(*reader, "s"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(reader->DeleteSession("s").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(reader->GetSession("s")->batches_applied(), 0);
}

TEST_F(AuthE2eTest, AWriterMayCreateAndStreamButNotDelete) {
  std::unique_ptr<client::Client> writer = As(kWriterToken);
  ASSERT_TRUE(writer->CreateSession("s", LinearConfig()).ok());
  EXPECT_EQ(StreamOneBatch(*writer, "s"), absl::StatusCode::kOk);
  EXPECT_EQ(writer->GetSession("s")->batches_applied(), 1);
  const absl::Status deleted = writer->DeleteSession("s");
  EXPECT_EQ(deleted.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(deleted.message().find("admin"), std::string::npos) << deleted;
  EXPECT_TRUE(writer->GetSession("s").ok());
}

TEST_F(AuthE2eTest, AnAdminMayDelete) {
  ASSERT_TRUE(As(kWriterToken)->CreateSession("s", LinearConfig()).ok());
  std::unique_ptr<client::Client> admin = As(kAdminToken);
  EXPECT_TRUE(admin->DeleteSession("s").ok());
  EXPECT_EQ(admin->GetSession("s").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(AuthStartTest, ABadTokenFileRefusesStartNamingTheLine) {
  const std::string dir = MakeTempDir("auth-bad");
  WriteFile(dir + "/tokens",
            "# ok\nreader-token-0123456789abcdef reader\n"
            "writer-token-0123456789abcdef owner\n");
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.auth_tokens_file = dir + "/tokens";
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find(":3:"), std::string::npos)
      << server.status();
  EXPECT_NE(server.status().message().find("owner"), std::string::npos);
  EXPECT_EQ(server.status().message().find("writer-token"), std::string::npos);

  options.auth_tokens_file = dir + "/missing";
  server = server::Server::BuildAndStart(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("--auth-tokens"), std::string::npos);
}

// ----------------------------------------------------------------------------
// TLS

// A CA, a server certificate for localhost and 127.0.0.1 and a client
// certificate, all signed by the CA, made by openssl in `dir`.
struct TestCertificates {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key;  // paths
  bool ok = false;
};

bool Openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {OPENSSL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  const ProcessResult r = RunProcess(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0;
}

TestCertificates MakeCertificates() {
  TestCertificates c;
  c.dir = MakeTempDir("tls");
  const std::string d = c.dir;
  c.ca = d + "/ca.pem";
  c.server_cert = d + "/server.pem";
  c.server_key = d + "/server.key";
  c.client_cert = d + "/client.pem";
  c.client_key = d + "/client.key";
  const std::vector<std::string> ec = {
      "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
  auto with = [](std::vector<std::string> a,
                 const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  WriteFile(d + "/server.ext",
            "basicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  WriteFile(d + "/client.ext",
            "basicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n");
  c.ok = Openssl(with({"req", "-x509", "-days", "2", "-subj",
                       "/CN=ckad test CA", "-keyout", d + "/ca.key", "-out",
                       c.ca, "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign"},
                      ec)) &&
         Openssl(with({"req", "-subj", "/CN=localhost", "-keyout", c.server_key,
                       "-out", d + "/server.csr"},
                      ec)) &&
         Openssl({"x509", "-req", "-in", d + "/server.csr", "-CA", c.ca,
                  "-CAkey", d + "/ca.key", "-CAcreateserial", "-days", "2",
                  "-out", c.server_cert, "-extfile", d + "/server.ext"}) &&
         Openssl(with({"req", "-subj", "/CN=ckad test client", "-keyout",
                       c.client_key, "-out", d + "/client.csr"},
                      ec)) &&
         Openssl({"x509", "-req", "-in", d + "/client.csr", "-CA", c.ca,
                  "-CAkey", d + "/ca.key", "-CAcreateserial", "-days", "2",
                  "-out", c.client_cert, "-extfile", d + "/client.ext"});
  return c;
}

class TlsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TestCertificates(MakeCertificates());
  }
  static void TearDownTestSuite() { delete certs_; }
  void SetUp() override { ASSERT_TRUE(certs_->ok); }

  client::ClientOptions TlsClient(bool with_client_cert) {
    client::ClientOptions options;
    options.use_tls = true;
    options.tls_root_certs = ReadFile(certs_->ca);
    if (with_client_cert) {
      options.tls_client_cert = ReadFile(certs_->client_cert);
      options.tls_client_key = ReadFile(certs_->client_key);
    }
    return options;
  }

  server::ServerOptions TlsServer(bool mutual) {
    server::ServerOptions options;
    options.tls_cert_file = certs_->server_cert;
    options.tls_key_file = certs_->server_key;
    if (mutual) options.tls_client_ca_file = certs_->ca;
    return options;
  }

  static TestCertificates* certs_;
};

TestCertificates* TlsE2eTest::certs_ = nullptr;

TEST_F(TlsE2eTest, ATlsConnectionWorksByAddressAndByServerName) {
  std::unique_ptr<server::Server> server = StartServer(TlsServer(false));
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::Client> c = Connect(TlsClient(false), server->port());
  ASSERT_TRUE(c->CreateSession("s", LinearConfig()).ok());
  EXPECT_EQ(StreamOneBatch(*c, "s"), absl::StatusCode::kOk);
  EXPECT_EQ(c->GetSession("s")->batches_applied(), 1);

  client::ClientOptions by_name = TlsClient(false);
  by_name.tls_server_name = "localhost";
  EXPECT_TRUE(Connect(by_name, server->port())->ListSessions().ok());
  server->Shutdown();
}

TEST_F(TlsE2eTest, APlaintextClientOrAnUntrustedServerFails) {
  std::unique_ptr<server::Server> server = StartServer(TlsServer(false));
  ASSERT_NE(server, nullptr);
  EXPECT_FALSE(Connect(client::ClientOptions(), server->port())
                   ->ListSessions(absl::Seconds(3))
                   .ok());
  client::ClientOptions wrong_name = TlsClient(false);
  wrong_name.tls_server_name = "ckad.example.org";
  EXPECT_FALSE(
      Connect(wrong_name, server->port())->ListSessions(absl::Seconds(3)).ok());
  server->Shutdown();
}

TEST_F(TlsE2eTest, MutualTlsAcceptsACertifiedClientAndRefusesOneWithout) {
  std::unique_ptr<server::Server> server = StartServer(TlsServer(true));
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::Client> certified =
      Connect(TlsClient(true), server->port());
  ASSERT_TRUE(certified->CreateSession("s", LinearConfig()).ok());
  EXPECT_EQ(StreamOneBatch(*certified, "s"), absl::StatusCode::kOk);

  absl::StatusOr<std::vector<v1::Session>> anonymous =
      Connect(TlsClient(false), server->port())->ListSessions(absl::Seconds(3));
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnavailable)
      << anonymous.status();
  server->Shutdown();
}

TEST_F(TlsE2eTest, TlsAndTokensTogether) {
  const std::string tokens = certs_->dir + "/tokens";
  WriteFile(tokens, absl::StrCat(kWriterToken, " writer\n"));
  server::ServerOptions options = TlsServer(true);
  options.auth_tokens_file = tokens;
  std::unique_ptr<server::Server> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  client::ClientOptions with_token = TlsClient(true);
  with_token.bearer_token = kWriterToken;
  EXPECT_TRUE(Connect(with_token, server->port())->ListSessions().ok());
  EXPECT_EQ(
      Connect(TlsClient(true), server->port())->ListSessions().status().code(),
      absl::StatusCode::kUnauthenticated);
  server->Shutdown();
}

// ----------------------------------------------------------------------------
// Listening beyond loopback: tokens and TLS, or --allow-insecure.

server::ServerOptions OnEveryAddress(server::ServerOptions options) {
  options.listen = "0.0.0.0:0";
  options.threads = 2;
  options.shutdown_grace = absl::Seconds(5);
  return options;
}

TEST_F(TlsE2eTest, EveryAddressWithoutTokensOrTlsIsRefusedNamingTheFix) {
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(OnEveryAddress({}));
  ASSERT_FALSE(server.ok()) << "ckad served 0.0.0.0 in plaintext for anyone";
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* part : {"--listen '0.0.0.0:0'", "'0.0.0.0'", "--auth-tokens",
                           "--tls-cert", "--tls-key", "--allow-insecure"}) {
    EXPECT_NE(server.status().message().find(part), std::string::npos)
        << part << " not in: " << server.status();
  }

  // Either one alone is refused too.
  const std::string tokens = certs_->dir + "/listen-tokens";
  WriteFile(tokens, absl::StrCat(kWriterToken, " writer\n"));
  server::ServerOptions tokens_only;
  tokens_only.auth_tokens_file = tokens;
  server = server::Server::BuildAndStart(OnEveryAddress(tokens_only));
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("--tls-cert"), std::string::npos)
      << server.status();
  server = server::Server::BuildAndStart(OnEveryAddress(TlsServer(false)));
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("give --auth-tokens"),
            std::string::npos)
      << server.status();
}

TEST_F(TlsE2eTest, EveryAddressInPlaintextIsServedWithAllowInsecure) {
  server::ServerOptions options;
  options.allow_insecure = true;
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(OnEveryAddress(options));
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::Client> c =
      Connect(client::ClientOptions(), (*server)->port());
  EXPECT_TRUE(c->CreateSession("s", LinearConfig()).ok());
  EXPECT_EQ(StreamOneBatch(*c, "s"), absl::StatusCode::kOk);
  (*server)->Shutdown();
}

TEST_F(TlsE2eTest, EveryAddressIsServedWithTokensAndTls) {
  const std::string tokens = certs_->dir + "/listen-tokens";
  WriteFile(tokens, absl::StrCat(kWriterToken, " writer\n"));
  server::ServerOptions options = TlsServer(false);
  options.auth_tokens_file = tokens;
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(OnEveryAddress(options));
  ASSERT_TRUE(server.ok()) << server.status();
  client::ClientOptions with_token = TlsClient(false);
  with_token.bearer_token = kWriterToken;
  std::unique_ptr<client::Client> c = Connect(with_token, (*server)->port());
  ASSERT_TRUE(c->CreateSession("s", LinearConfig()).ok());
  EXPECT_EQ(StreamOneBatch(*c, "s"), absl::StatusCode::kOk);
  EXPECT_EQ(Connect(TlsClient(false), (*server)->port())
                ->ListSessions()
                .status()
                .code(),
            absl::StatusCode::kUnauthenticated);
  (*server)->Shutdown();
}

TEST(TlsStartTest, UnreadableCertificateFilesRefuseStart) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls_cert_file = "/nonexistent/server.pem";
  options.tls_key_file = "/nonexistent/server.key";
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("--tls-cert"), std::string::npos)
      << server.status();
}

TEST(ClientOptionsTest, TlsFieldsWithoutUseTlsAreRefused) {
  client::ClientOptions options;
  options.tls_root_certs = "PEM";
  EXPECT_EQ(client::Client::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.use_tls = true;
  options.tls_client_cert = "PEM";
  EXPECT_EQ(client::Client::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cka::testing
