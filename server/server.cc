#include "cka/server/server.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/engine.h"
#include "cka/core/hsic.h"
#include "cka/core/memory_budget.h"
#include "cka/core/thread_pool.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "server/auth.h"
#include "server/group_committer.h"
#include "server/grpc_metrics_interceptor.h"
#include "server/http_server.h"
#include "server/listen_address.h"
#include "server/metrics.h"
#include "server/replica_set.h"
#include "server/similarity_service_impl.h"
#include "server/sqlite_state_store.h"
#include "spdlog/spdlog.h"

namespace cka::server {
namespace {

// How long unary and health calls may take to finish once the streams have
// drained.
constexpr absl::Duration kCallDrainTime = absl::Seconds(1);
// Threads that answer GetSimilarity and WatchSimilarity, apart from the batch
// workers: a query there waited for a worker to finish a batch's Gram work.
constexpr int kQueryThreads = 2;

// Returns the contents of the file that `flag` names.
absl::StatusOr<std::string> ReadFlagFile(const char* flag,
                                         const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", path, "': cannot read the file"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct CertificateAndKey {
  std::string certificate;  // PEM chain
  std::string key;          // PEM
};

// Returns the contents of --tls-cert and --tls-key.
absl::StatusOr<CertificateAndKey> ReadCertificateAndKey(
    const ServerOptions& options) {
  absl::StatusOr<std::string> cert =
      ReadFlagFile("--tls-cert", options.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      ReadFlagFile("--tls-key", options.tls_key_file);
  if (!key.ok()) return key.status();
  return CertificateAndKey{*std::move(cert), *std::move(key)};
}

// Returns the credentials of --tls-cert/--tls-key/--tls-client-ca, or
// insecure ones without them.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const ServerOptions& options) {
  if (options.tls_cert_file.empty() && options.tls_key_file.empty()) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca: needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key: give both or neither");
  }
  absl::StatusOr<CertificateAndKey> own = ReadCertificateAndKey(options);
  if (!own.ok()) return own.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back(
      {std::move(own->key), std::move(own->certificate)});
  if (!options.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadFlagFile("--tls-client-ca", options.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Returns the channel of the HTTP layer's calls: ckad's own service in
// process, or --http-grpc-target (the router) with `credentials` and
// `arguments`. InvalidArgument for a malformed target.
absl::StatusOr<std::shared_ptr<grpc::Channel>> HttpBackendChannel(
    const ServerOptions& options, grpc::Server& server,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const grpc::ChannelArguments& arguments) {
  if (options.http_grpc_target.empty()) {
    return server.InProcessChannel(arguments);
  }
  absl::StatusOr<std::string> host =
      ListenHost(options.http_grpc_target, "--http-grpc-target");
  if (!host.ok()) return host.status();
  return grpc::CreateCustomChannel(options.http_grpc_target, credentials,
                                   arguments);
}

// Returns the credentials of the HTTP layer's calls to --http-grpc-target
// and --http-peers: TLS when ckad serves TLS or --http-grpc-ca is given
// (presenting ckad's certificate where replicas require client ones),
// plaintext otherwise.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
HttpBackendCredentials(const ServerOptions& options) {
  if (options.tls_cert_file.empty() && options.http_grpc_ca_file.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.http_grpc_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadFlagFile("--http-grpc-ca", options.http_grpc_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_client_ca_file.empty()) {
    absl::StatusOr<CertificateAndKey> own = ReadCertificateAndKey(options);
    if (!own.ok()) return own.status();
    ssl.pem_cert_chain = std::move(own->certificate);
    ssl.pem_private_key = std::move(own->key);
  }
  return grpc::SslCredentials(ssl);
}

// Returns `d` in milliseconds for a channel argument; INT_MAX (gRPC's
// "never") for an infinite or larger one.
int ChannelArgMs(absl::Duration d) {
  if (d == absl::InfiniteDuration() || d >= absl::Milliseconds(INT_MAX))
    return INT_MAX;
  return static_cast<int>(absl::ToInt64Milliseconds(d));
}

// Sets keepalive and connection-age arguments so that dead clients are
// noticed and their streams freed.
void SetConnectionArguments(const ServerOptions& options,
                            grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                              ChannelArgMs(options.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              ChannelArgMs(options.keepalive_timeout));
  // Ping idle connections too, and accept the pings of clients that do.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      ChannelArgMs(options.min_client_ping_interval));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              ChannelArgMs(options.max_connection_idle));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                              ChannelArgMs(options.max_connection_age));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                              ChannelArgMs(options.max_connection_age_grace));
}

class ServerImpl final : public Server {
 public:
  ServerImpl() = default;
  ~ServerImpl() override { Shutdown(); }

  absl::Status Start(const ServerOptions& options);

  int port() const override { return port_; }
  int http_port() const override {
    return http_server_ != nullptr ? http_server_->port() : 0;
  }
  void Shutdown() override;
  void Wait() override;
  core::Engine& engine() override { return *engine_; }
  int64_t batches_received() const override {
    return service_->batches_received();
  }

 private:
  absl::Duration grace_;
  int port_ = 0;
  // Destroyed in reverse order: the gRPC server and the service before the
  // pools and the committer they use, and those before the engine and the
  // store.
  std::unique_ptr<TokenTable> tokens_;  // null: no authentication
  // Reads the engine at each scrape, which only the HTTP server asks for.
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<core::Engine> engine_;
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<core::ThreadPool> pool_;
  std::unique_ptr<core::ThreadPool> query_pool_;
  std::unique_ptr<SimilarityServiceImpl> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  // Calls grpc_server_ in-process: stopped and destroyed before it.
  std::unique_ptr<HttpServer> http_server_;

  // Held for the whole of a shutdown, so that a second caller waits for the
  // first.
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

absl::Status ServerImpl::Start(const ServerOptions& options) {
  absl::StatusOr<std::string> host = ListenHost(options.listen);
  if (!host.ok()) return host.status();
  const ListenSecurity listen_security = {
      .auth_tokens = !options.auth_tokens_file.empty(),
      .tls = !options.tls_cert_file.empty() && !options.tls_key_file.empty(),
      .allow_insecure = options.allow_insecure};
  absl::Status exposure = CheckListenSecurity(options.listen, listen_security);
  if (exposure.ok() && !options.http_listen.empty()) {
    exposure = CheckListenSecurity(options.http_listen, listen_security,
                                   "--http-listen");
  }
  if (!exposure.ok()) return exposure;
  if (options.max_message_mb < 1 || options.max_message_mb > 2047) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-message-mb: ", options.max_message_mb, "; expected 1 to 2047"));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads: ", options.threads, "; expected >= 0"));
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown-grace-s: negative");
  }
  grace_ = options.shutdown_grace;
  if (options.max_streams_per_client < 0 ||
      options.max_pending_total_bytes < 0) {
    return absl::InvalidArgumentError(
        "--max-streams-per-client and --max-pending-total-mb: negative");
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentials(options);
  if (!credentials.ok()) return credentials.status();
  if (!options.auth_tokens_file.empty()) {
    absl::StatusOr<TokenTable> tokens =
        TokenTable::Load(options.auth_tokens_file);
    if (!tokens.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-tokens: ", tokens.status().message()));
    }
    tokens_ = std::make_unique<TokenTable>(*std::move(tokens));
  }

  core::EngineLimits limits = options.limits;
  std::string memory_rule = "--memory-limit-mb";
  if (limits.session.memory == nullptr) {
    const int64_t bytes =
        options.memory_limit_mb > 0
            ? options.memory_limit_mb << 20
            : core::MemoryBudget::DefaultLimitBytes(&memory_rule);
    limits.session.memory = std::make_shared<core::MemoryBudget>(
        bytes, "ckad's memory budget (--memory-limit-mb)");
  }
  if (limits.session.join_memory == nullptr) {
    limits.session.join_memory = std::make_shared<core::MemoryBudget>(
        options.max_pending_total_bytes,
        "the join buffers of all sessions (--max-pending-total-mb)");
  }
  const int64_t memory_limit = limits.session.memory->limit();
  engine_ = std::make_unique<core::Engine>(limits);
  metrics_ = std::make_unique<Metrics>([engine = engine_.get()] {
    Metrics::Gauges gauges;
    for (const std::string& id : engine->ListSessions()) {
      absl::StatusOr<std::shared_ptr<core::Session>> session =
          engine->GetSession(id);
      if (!session.ok()) continue;  // deleted meanwhile
      const core::SessionInfo info = (*session)->Info();
      ++gauges.sessions;
      gauges.state_bytes += info.state_bytes;
      gauges.pending_bytes += info.pending_bytes;
    }
    const core::MemoryBudget& budget = *engine->limits().session.memory;
    gauges.memory_budget_bytes = budget.limit();
    gauges.memory_budget_used_bytes = budget.used();
    return gauges;
  });
  if (!options.data_dir.empty()) {
    absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
        SqliteStateStore::Open(options.data_dir, options.sqlite_vfs);
    if (!store.ok()) {
      // Never start empty over a database that cannot be read: the operator
      // would lose the statistics without noticing.
      return absl::Status(
          store.status().code(),
          absl::StrCat("cannot use --data-dir '", options.data_dir,
                       "': ", store.status().message(),
                       " (ckad refuses to start; move the file away to start "
                       "empty)"));
    }
    store_ = *std::move(store);
    absl::StatusOr<std::map<std::string, SessionRecords>> stored =
        store_->LoadAll();
    if (!stored.ok()) return stored.status();
    for (const auto& [id, records] : *stored) {
      absl::StatusOr<std::unique_ptr<core::Session>> session =
          core::Session::FromRecords(records, limits.session);
      absl::Status added = session.ok()
                               ? engine_->AddSession(id, *std::move(session))
                               : session.status();
      if (!added.ok()) {
        return absl::Status(
            added.code(),
            absl::StrCat("cannot restore session '", id, "' from '",
                         store_->path(), "': ", added.message(),
                         " (ckad refuses to start; export the other sessions "
                         "or move the file away)"));
      }
      const core::SessionInfo info = engine_->GetSession(id).value()->Info();
      spdlog::info(
          "session '{}' restored: {} streams, {} batches applied, {} pending",
          id, info.streams.size(), info.batches_applied, info.batches_pending);
    }
    committer_ = std::make_unique<GroupCommitter>(
        engine_.get(), store_.get(), absl::Milliseconds(2),
        [metrics = metrics_.get()](absl::Duration write, int64_t batches) {
          metrics->RecordGroupCommit(write, batches);
        });
  }

  const int threads =
      options.threads > 0
          ? options.threads
          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  pool_ = std::make_unique<core::ThreadPool>(threads, "ckad-batch");
  // Layers and streams run in parallel on the pool; a multi-threaded BLAS call
  // inside each would oversubscribe the cores (bench/core_bench: layer-pool).
  if (threads > 1) core::SetBlasThreads(1);
  query_pool_ = std::make_unique<core::ThreadPool>(kQueryThreads, "ckad-query");
  const int max_message_bytes = options.max_message_mb << 20;
  AdmissionOptions admission;
  admission.tokens = tokens_.get();
  admission.max_message_bytes = max_message_bytes;
  admission.max_streams_per_client = options.max_streams_per_client;
  service_ = std::make_unique<SimilarityServiceImpl>(
      engine_.get(), pool_.get(), query_pool_.get(), committer_.get(),
      admission, metrics_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &port_);
  builder.RegisterService(service_.get());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<GrpcMetricsInterceptorFactory>(metrics_.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // gRPC itself cuts a call at twice the limit; up to there the service reads
  // an oversize batch and refuses it alone, naming --max-message-mb, and the
  // stream goes on.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(int64_t{2} * max_message_bytes, INT_MAX)));
  builder.SetMaxSendMessageSize(max_message_bytes);
  SetConnectionArguments(options, &builder);
  // gRPC's own buffers (received bytes not yet parsed, send queues) are
  // bounded by a quota of their own, beside the budget that parsed messages
  // and everything after them draw from.
  const int64_t transport_bytes =
      std::max<int64_t>(memory_limit / 4, int64_t{4} * max_message_bytes);
  grpc::ResourceQuota transport_quota("ckad-transport");
  transport_quota.Resize(static_cast<size_t>(transport_bytes));
  builder.SetResourceQuota(transport_quota);
  // Without this gRPC sets SO_REUSEPORT, and a second ckad on the same port
  // (and maybe the same data directory) would start instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen '", options.listen,
                     "': cannot listen there (address in use, "
                     "or not an address of this machine)"));
  }
  grpc_server_->GetHealthCheckService()->SetServingStatus(true);
  if (!options.http_listen.empty()) {
    HttpServerOptions http;
    http.listen = options.http_listen;
    http.tls_cert_file = options.tls_cert_file;
    http.tls_key_file = options.tls_key_file;
    http.tls_client_ca_file = options.tls_client_ca_file;
    http.tokens = tokens_.get();
    http.memory = engine_->limits().session.memory;
    http.metrics_text = [metrics = metrics_.get()] { return metrics->Text(); };
    grpc::ChannelArguments channel_args;
    // The server's send limit (--max-message-mb) is the one that applies.
    channel_args.SetMaxReceiveMessageSize(-1);
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
        backend_credentials = HttpBackendCredentials(options);
    if (!backend_credentials.ok()) return backend_credentials.status();
    grpc::ChannelArguments backend_args = channel_args;
    // A replica (or the router) that comes back is seen within seconds, not
    // after gRPC's default backoff of up to two minutes.
    backend_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
    if (!options.http_grpc_server_name.empty() &&
        (!options.tls_cert_file.empty() ||
         !options.http_grpc_ca_file.empty())) {
      backend_args.SetSslTargetNameOverride(options.http_grpc_server_name);
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> backend = HttpBackendChannel(
        options, *grpc_server_, *backend_credentials, backend_args);
    if (!backend.ok()) return backend.status();
    if (!options.http_peers.empty()) {
      absl::StatusOr<std::unique_ptr<ReplicaSet>> replicas = ReplicaSet::Create(
          options.http_peers, *backend_credentials, backend_args);
      if (!replicas.ok()) return replicas.status();
      http.replicas = *std::move(replicas);
    }
    absl::StatusOr<std::unique_ptr<HttpServer>> http_server =
        HttpServer::Start(std::move(http), *std::move(backend));
    if (!http_server.ok()) return http_server.status();
    http_server_ = *std::move(http_server);
    spdlog::info(
        "http: calls with a session go to {}; the session list asks {}",
        options.http_grpc_target.empty()
            ? std::string("this ckad")
            : absl::StrCat(options.http_grpc_target, " (--http-grpc-target)"),
        options.http_peers.empty()
            ? std::string("the same")
            : absl::StrCat("every replica of --http-peers ",
                           options.http_peers));
  }

  const bool tls = !options.tls_cert_file.empty();
  const std::string security = absl::StrCat(
      tls ? (options.tls_client_ca_file.empty() ? "TLS" : "mutual TLS")
          : "plaintext",
      ", ",
      tokens_ != nullptr ? absl::StrCat(tokens_->size(), " bearer tokens")
                         : std::string("no authentication"));
  const std::string where =
      IsLoopbackHost(*host)
          ? absl::StrCat("loopback only, ", security)
          : absl::StrCat("reachable from other machines, ", security);
  if (!IsLoopbackHost(*host) && (!tls || tokens_ == nullptr)) {
    // Only with --allow-insecure: CheckListenSecurity refused it otherwise.
    spdlog::warn(
        "ckad listens on the non-loopback address {} {} (--allow-insecure): "
        "anyone who can reach it can {}; give {}",
        *host, tokens_ == nullptr ? "without authentication" : "without TLS",
        tokens_ == nullptr ? "create, stream into and delete sessions"
                           : "read the traffic and its bearer tokens",
        tokens_ == nullptr ? "--auth-tokens (and --tls-cert/--tls-key)"
                           : "--tls-cert/--tls-key");
  }
  spdlog::info(
      "memory budget {} MiB ({}; --memory-limit-mb), {} MiB of it in use by "
      "restored sessions; gRPC transport quota {} MiB",
      memory_limit >> 20, memory_rule, limits.session.memory->used() >> 20,
      transport_bytes >> 20);
  spdlog::info(
      "ckad listening on {}:{} ({}), {} worker threads (float32 Grams: {}), "
      "{}, "
      "max message {} MiB",
      *host, port_, where, threads, core::LinearGramKernelName(),
      options.data_dir.empty()
          ? std::string("state in memory only (no --data-dir)")
          : absl::StrCat("data dir '", options.data_dir, "' (",
                         engine_->ListSessions().size(), " sessions restored)"),
      options.max_message_mb);
  return absl::OkStatus();
}

void ServerImpl::Shutdown() {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (grpc_server_ == nullptr) return;  // Start failed; nothing is serving

  const absl::Time deadline = absl::Now() + grace_;
  spdlog::info(
      "ckad shutting down: health NOT_SERVING, draining streams (grace {})",
      absl::FormatDuration(grace_));
  // Its requests are gRPC calls to this server: they end first.
  if (http_server_ != nullptr) http_server_->Stop();
  grpc::HealthCheckServiceInterface* health =
      grpc_server_->GetHealthCheckService();
  health->SetServingStatus(false);
  // Ends open health Watch calls (after they are told NOT_SERVING) so they do
  // not hold the shutdown for the whole grace period; Check keeps answering
  // NOT_SERVING.
  health->Shutdown();
  service_->BeginShutdown();
  if (!service_->WaitForStreamsDrained(deadline)) {
    spdlog::warn(
        "shutdown grace period over with streams still busy; cancelling them");
  }
  // Stops accepting calls and cancels what still runs at the deadline. With the
  // streams drained only unary calls (short) and health Watch calls (which
  // gRPC's health service never ends by itself) remain, so they get at most
  // kCallDrainTime rather than the rest of the grace.
  grpc_server_->Shutdown(
      absl::ToChronoTime(std::min(deadline, absl::Now() + kCallDrainTime)));
  grpc_server_->Wait();
  service_->WaitForReactors();
  if (committer_ != nullptr) {
    absl::Status saved = committer_->Stop();
    if (!saved.ok())
      spdlog::error("last changes not written at shutdown: {}",
                    saved.ToString());
  }
  // Nothing writes any more: release the data directory (and its lock) so that
  // a new server can start on it while this object still exists.
  committer_.reset();
  store_.reset();
  spdlog::info("ckad stopped");
}

void ServerImpl::Wait() {
  absl::MutexLock lock(&shutdown_mu_);
  shutdown_mu_.Await(absl::Condition(&shut_down_));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(
    const ServerOptions& options) {
  auto server = std::make_unique<ServerImpl>();
  absl::Status status = server->Start(options);
  if (!status.ok()) return status;
  return server;
}

}  // namespace cka::server
