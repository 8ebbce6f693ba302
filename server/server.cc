#include "cka/server/server.h"

#include <algorithm>
#include <memory>
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
#include "cka/core/thread_pool.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/file_state_store.h"
#include "server/session_saver.h"
#include "server/similarity_service_impl.h"
#include "spdlog/spdlog.h"

namespace cka::server {
namespace {

// How long unary and health calls may take to finish once the streams have
// drained.
constexpr absl::Duration kCallDrainTime = absl::Seconds(1);

// Splits "host:port" (IPv6 hosts in brackets) and checks the port. Returns the
// host.
absl::StatusOr<std::string> ListenHost(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen '", listen,
                     "': expected host:port with a port in [0, 65535]"));
  }
  return listen.substr(0, colon);
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || absl::StartsWith(host, "127.") ||
         host == "[::1]" || host == "ipv4:127.0.0.1" || host == "ipv6:[::1]";
}

class ServerImpl final : public Server {
 public:
  ServerImpl() = default;
  ~ServerImpl() override { Shutdown(); }

  absl::Status Start(const ServerOptions& options);

  int port() const override { return port_; }
  void Shutdown() override;
  void Wait() override;
  core::Engine& engine() override { return *engine_; }

 private:
  absl::Duration grace_;
  int port_ = 0;
  // Destroyed in reverse order: the gRPC server and the service before the pool
  // and the saver they use, and those before the engine and the store.
  std::unique_ptr<FileStateStore> store_;
  std::unique_ptr<core::Engine> engine_;
  std::unique_ptr<SessionSaver> saver_;
  std::unique_ptr<core::ThreadPool> pool_;
  std::unique_ptr<SimilarityServiceImpl> service_;
  std::unique_ptr<grpc::Server> grpc_server_;

  // Held for the whole of a shutdown, so that a second caller waits for the
  // first.
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

absl::Status ServerImpl::Start(const ServerOptions& options) {
  absl::StatusOr<std::string> host = ListenHost(options.listen);
  if (!host.ok()) return host.status();
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

  engine_ = std::make_unique<core::Engine>(options.limits);
  if (!options.data_dir.empty()) {
    absl::StatusOr<std::unique_ptr<FileStateStore>> store =
        FileStateStore::Open(options.data_dir);
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
    // A damaged file must stop the start: starting empty would overwrite
    // nothing now, but would silently answer without the statistics the
    // operator expects.
    absl::Status loaded = engine_->LoadAll(*store_);
    if (!loaded.ok()) {
      return absl::Status(
          loaded.code(),
          absl::StrCat("cannot restore the sessions in --data-dir '",
                       options.data_dir, "': ", loaded.message(),
                       " (move the damaged file away to start without it)"));
    }
    for (const std::string& id : engine_->ListSessions()) {
      absl::StatusOr<std::shared_ptr<core::Session>> session =
          engine_->GetSession(id);
      if (!session.ok()) continue;
      const core::SessionInfo info = (*session)->Info();
      spdlog::info(
          "session '{}' restored: {} streams, {} batches applied, {} pending",
          id, info.streams.size(), info.batches_applied, info.batches_pending);
    }
    saver_ = std::make_unique<SessionSaver>(engine_.get(), store_.get());
  }

  const int threads =
      options.threads > 0
          ? options.threads
          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  pool_ = std::make_unique<core::ThreadPool>(threads);
  // Layers and streams run in parallel on the pool; a multi-threaded BLAS call
  // inside each would oversubscribe the cores (bench/core_bench: layer-pool).
  if (threads > 1) core::SetBlasThreads(1);
  service_ = std::make_unique<SimilarityServiceImpl>(engine_.get(), pool_.get(),
                                                     saver_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &port_);
  builder.RegisterService(service_.get());
  const int max_message_bytes = options.max_message_mb << 20;
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
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

  const std::string where =
      IsLoopbackHost(*host)
          ? "loopback only"
          : "reachable from other machines, without authentication";
  spdlog::info(
      "ckad listening on {}:{} ({}), {} worker threads, {}, max message {} MiB",
      *host, port_, where, threads,
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
  if (saver_ != nullptr) {
    absl::Status saved = saver_->Stop();
    if (!saved.ok())
      spdlog::error("sessions not saved at shutdown: {}", saved.ToString());
  }
  // Nothing writes any more: release the data directory (and its lock) so that
  // a new server can start on it while this object still exists.
  saver_.reset();
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
