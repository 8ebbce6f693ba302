#include "server/http_server.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/client_context.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/answer_memory.h"
#include "server/http_event_stream.h"
#include "server/http_query.h"
#include "server/http_status.h"
#include "server/http_task_queue.h"
#include "server/listen_address.h"
#include "server/replica_set.h"
#include "server/web/web_assets.h"
#include "spdlog/spdlog.h"

namespace cka::server {
namespace {

constexpr char kJson[] = "application/json";

void SetError(grpc::StatusCode code, absl::string_view message,
              httplib::Response& response) {
  response.status = HttpStatusOf(code);
  response.set_content(ErrorJson(code, message), kJson);
}

void SetError(const absl::Status& status, httplib::Response& response) {
  SetError(static_cast<grpc::StatusCode>(status.code()), status.message(),
           response);
}

// Sets the answer of a gRPC call: `message` as JSON, or the error.
void SetAnswer(const grpc::Status& status,
               const google::protobuf::Message& message,
               httplib::Response& response) {
  if (!status.ok()) {
    SetError(status.error_code(), status.error_message(), response);
    return;
  }
  response.status = 200;
  response.set_content(MessageJson(message), kJson);
}

// SetAnswer for a large answer (a matrix or a series): its JSON's bytes are
// reserved in `memory` (when not null) before the JSON is built, and held
// until httplib has sent it or dropped the connection.
template <typename Message>
void SetPricedAnswer(const grpc::Status& status, const Message& message,
                     core::MemoryBudget* memory, httplib::Response& response) {
  if (!status.ok() || memory == nullptr) {
    SetAnswer(status, message, response);
    return;
  }
  absl::StatusOr<core::MemoryBudget::Reservation> held =
      memory->Reserve(JsonAnswerBytes(message), "the JSON of an answer");
  if (!held.ok()) {
    SetError(held.status(), response);
    return;
  }
  struct Body {
    std::string json;
    core::MemoryBudget::Reservation memory;
  };
  auto body =
      std::make_shared<Body>(Body{MessageJson(message), *std::move(held)});
  response.status = 200;
  // The provider owns the body: httplib destroys it with the response, once
  // sent.
  response.set_content_provider(
      body->json.size(), kJson,
      [body](size_t offset, size_t length, httplib::DataSink& sink) {
        return sink.write(body->json.data() + offset, length);
      });
}

bool IsPrintableAscii(absl::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return c >= 0x20 && c <= 0x7e; });
}

// Returns the request's Authorization header, to be the "authorization"
// metadata the service checks; nullopt without one. InvalidArgument for a
// header that gRPC metadata cannot carry.
absl::StatusOr<std::optional<std::string>> Authorization(
    const httplib::Request& request) {
  if (!request.has_header("Authorization")) return std::nullopt;
  if (request.get_header_value_count("Authorization") > 1) {
    return absl::InvalidArgumentError(
        "Authorization header: given more than once");
  }
  std::string value = request.get_header_value("Authorization");
  if (!IsPrintableAscii(value)) {
    return absl::InvalidArgumentError(
        "Authorization header: expected printable ASCII ('Bearer <token>')");
  }
  return value;
}

// Prepares the gRPC call of `request`: its deadline (a watch has none), its
// Authorization header as the "authorization" metadata, and `session_id` (if
// any) as the "x-cka-session" metadata a router hashes on, as the client
// library sends it (an id gRPC metadata cannot carry goes without: the
// client library could not have created it through a router either).
// Returns Authorization's InvalidArgument.
absl::Status PrepareCall(const httplib::Request& request,
                         absl::string_view session_id, bool with_deadline,
                         grpc::ClientContext* context) {
  if (with_deadline) {
    context->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::seconds(HttpServer::kCallDeadlineSeconds));
  }
  if (!session_id.empty() && IsPrintableAscii(session_id)) {
    context->AddMetadata("x-cka-session", std::string(session_id));
  }
  absl::StatusOr<std::optional<std::string>> authorization =
      Authorization(request);
  if (!authorization.ok()) return authorization.status();
  if (authorization->has_value()) {
    context->AddMetadata("authorization", **authorization);
  }
  return absl::OkStatus();
}

// Returns InvalidArgument naming the first query parameter, for routes that
// take none.
absl::Status NoParameters(const httplib::Request& request) {
  if (request.params.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("query parameter '", request.params.begin()->first,
                   "': unknown; this route takes no parameters"));
}

// Returns the decoded segments of the request's path ("/a/b%2Fc" gives
// {"a", "b/c"}): split before decoding, so that an encoded '/' stays in its
// segment (a session id may contain one).
std::vector<std::string> PathSegments(const httplib::Request& request) {
  absl::string_view target = request.target;
  target = target.substr(0, target.find('?'));
  absl::ConsumePrefix(&target, "/");
  std::vector<std::string> segments;
  for (absl::string_view raw : absl::StrSplit(target, '/')) {
    segments.push_back(httplib::detail::decode_url(std::string(raw), false));
  }
  return segments;
}

// Returns `text`, JSON that ErrorJson or MessageJson wrote, parsed (without
// exceptions: a failure would be a bug in them, and shows as null).
nlohmann::json OwnJson(const std::string& text) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  return json.is_discarded() ? nlohmann::json() : json;
}

}  // namespace

HttpServer::HttpServer(HttpServerOptions options,
                       std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      stub_(v1::Similarity::NewStub(std::move(channel))) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    HttpServerOptions options, std::shared_ptr<grpc::Channel> channel) {
  absl::StatusOr<std::string> host =
      ListenHost(options.listen, "--http-listen");
  if (!host.ok()) return host.status();
  const int port =
      std::stoi(options.listen.substr(options.listen.rfind(':') + 1));
  absl::string_view bind_host = *host;
  if (absl::ConsumePrefix(&bind_host, "["))
    absl::ConsumeSuffix(&bind_host, "]");

  std::unique_ptr<HttpServer> server(
      new HttpServer(std::move(options), std::move(channel)));
  const HttpServerOptions& o = server->options_;
  if (o.tls_cert_file.empty()) {
    server->http_ = std::make_unique<httplib::Server>();
  } else {
    auto https = std::make_unique<httplib::SSLServer>(
        o.tls_cert_file.c_str(), o.tls_key_file.c_str(),
        o.tls_client_ca_file.empty() ? nullptr : o.tls_client_ca_file.c_str());
    if (!https->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--http-listen: cannot serve HTTPS with --tls-cert '",
                       o.tls_cert_file, "' and --tls-key '", o.tls_key_file,
                       "' (unreadable, or not a PEM certificate and its key)"));
    }
    server->http_ = std::move(https);
  }
  httplib::Server& http = *server->http_;
  http.new_task_queue = [] {
    return new HttpTaskQueue(kThreads, kMaxQueuedConnections);
  };
  http.set_payload_max_length(kMaxBodyBytes);
  http.set_read_timeout(kIdleSeconds, 0);
  http.set_write_timeout(kIdleSeconds, 0);
  http.set_keep_alive_timeout(kIdleSeconds);
  http.set_keep_alive_max_count(kMaxRequestsPerConnection);
  HttpServer* self = server.get();
  http.set_pre_routing_handler(
      [self](const httplib::Request& request, httplib::Response& response) {
        self->Dispatch(request, response);
        return httplib::Server::HandlerResponse::Handled;
      });
  // httplib's own refusals (malformed request 400, long URI 414, large body
  // 413) come without a body: give them the API's.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& response) {
        if (!response.body.empty() || response.content_provider_) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        const int status = response.status;
        SetError(status == 413 ? grpc::StatusCode::RESOURCE_EXHAUSTED
                               : grpc::StatusCode::INVALID_ARGUMENT,
                 absl::StrCat(status == 413   ? "request body too large"
                              : status == 414 ? "request URI too long"
                                              : "malformed request",
                              " (limits: 8 KiB request line and header lines, ",
                              kMaxBodyBytes, " bytes of body)"),
                 response);
        response.status = status;
        return httplib::Server::HandlerResponse::Handled;
      }));

  const bool bound =
      port == 0
          ? (server->port_ = http.bind_to_any_port(std::string(bind_host))) > 0
          : http.bind_to_port(std::string(bind_host), port);
  if (!bound) {
    return absl::UnavailableError(absl::StrCat(
        "--http-listen '", o.listen,
        "': cannot listen there (address in use, or not an address of this "
        "machine)"));
  }
  if (port != 0) server->port_ = port;
  server->listener_ = std::thread([self] {
    self->http_->listen_after_bind();
    self->listener_exited_ = true;
  });
  // httplib's stop() does nothing until the accepting loop runs, so a Stop
  // right after Start would leave it running: wait the moment it takes.
  while (!http.is_running() && !server->listener_exited_) {
    std::this_thread::yield();
  }
  spdlog::info("http listening on {}:{} ({})", *host, server->port_,
               o.tls_cert_file.empty() ? "plaintext" : "TLS");
  return server;
}

void HttpServer::Stop() {
  if (stopped_.exchange(true)) return;
  if (http_ != nullptr) http_->stop();
  if (listener_.joinable()) listener_.join();
}

void HttpServer::Dispatch(const httplib::Request& request,
                          httplib::Response& response) {
  response.set_header("Cache-Control", "no-store");
  if (request.method != "GET" && request.method != "HEAD") {
    response.set_header("Allow", "GET, HEAD");
    // Its body, if any, is never read: it must not be taken for the next
    // request.
    response.set_header("Connection", "close");
    response.status = 405;
    response.set_content(
        ErrorJson(grpc::StatusCode::UNIMPLEMENTED,
                  absl::StrCat("method ", request.method.substr(0, 16),
                               ": the HTTP API is read-only (GET); create, "
                               "stream and delete over gRPC")),
        kJson);
    return;
  }
  const std::vector<std::string> path = PathSegments(request);
  if (path.size() == 1 && path[0] == "healthz") {
    response.set_content("ok\n", "text/plain");
    return;
  }
  if (path.size() == 1 && path[0] == "metrics" && options_.metrics_text) {
    ServeMetrics(request, response);
    return;
  }
  const bool api = path.size() >= 3 && path[0] == "api" && path[1] == "v1" &&
                   path[2] == "sessions";
  if (!api && path[0] != "api") {
    if (std::optional<WebAsset> asset = FindWebAsset(request.path)) {
      // The page holds no data (the API asks for the token): no token here.
      response.headers.erase("Cache-Control");
      response.set_header("Cache-Control", "no-cache");
      response.set_header("Content-Security-Policy",
                          std::string(kWebAssetSecurityPolicy));
      response.set_header("X-Content-Type-Options", "nosniff");
      response.set_content(asset->body.data(), asset->body.size(),
                           std::string(asset->content_type));
      return;
    }
  }
  if (!api || path.size() > 5 ||
      (path.size() == 5 && path[4] != "similarity" && path[4] != "watch" &&
       path[4] != "series")) {
    SetError(grpc::StatusCode::NOT_FOUND,
             absl::StrCat("no route for ", request.path.substr(0, 128),
                          "; the API is under /api/v1/sessions"),
             response);
    return;
  }
  if (path.size() == 5 && path[4] == "watch") {
    ServeWatch(path[3], request, response);
    return;
  }
  if (path.size() == 3 && options_.replicas != nullptr) {
    ServeReplicaSessions(request, response);
    return;
  }
  grpc::ClientContext context;
  absl::Status prepared = PrepareCall(request, path.size() > 3 ? path[3] : "",
                                      /*with_deadline=*/true, &context);
  if (prepared.ok() && path.size() < 5) prepared = NoParameters(request);
  if (!prepared.ok()) {
    SetError(prepared, response);
    return;
  }
  if (path.size() == 3) {
    v1::ListSessionsResponse sessions;
    SetAnswer(stub_->ListSessions(&context, {}, &sessions), sessions, response);
  } else if (path.size() == 4) {
    v1::GetSessionRequest get;
    get.set_session_id(path[3]);
    v1::Session session;
    SetAnswer(stub_->GetSession(&context, get, &session), session, response);
  } else if (path[4] == "series") {
    absl::StatusOr<v1::GetSimilaritySeriesRequest> query =
        SeriesRequestFromQuery(path[3], request.params);
    if (!query.ok()) {
      SetError(query.status(), response);
      return;
    }
    v1::SimilaritySeries series;
    SetPricedAnswer(stub_->GetSimilaritySeries(&context, *query, &series),
                    series, options_.memory.get(), response);
  } else {
    absl::StatusOr<v1::GetSimilarityRequest> query =
        SimilarityRequestFromQuery(path[3], request.params);
    if (!query.ok()) {
      SetError(query.status(), response);
      return;
    }
    v1::SimilarityMatrix matrix;
    SetPricedAnswer(stub_->GetSimilarity(&context, *query, &matrix), matrix,
                    options_.memory.get(), response);
  }
}

void HttpServer::ServeReplicaSessions(const httplib::Request& request,
                                      httplib::Response& response) {
  absl::StatusOr<std::optional<std::string>> authorization =
      Authorization(request);
  absl::Status valid = authorization.status();
  if (valid.ok()) valid = NoParameters(request);
  if (!valid.ok()) {
    SetError(valid, response);
    return;
  }
  const std::vector<ReplicaSessions> answers =
      options_.replicas->ListSessions(*authorization);
  nlohmann::json sessions = nlohmann::json::array();
  nlohmann::json replicas = nlohmann::json::array();
  nlohmann::json unanswered = nlohmann::json::array();
  std::string failures;
  std::optional<grpc::StatusCode> common_code;
  for (const ReplicaSessions& answer : answers) {
    if (!answer.status.ok()) {
      const grpc::StatusCode code = answer.status.error_code();
      common_code = !common_code.has_value() || *common_code == code
                        ? code
                        : grpc::StatusCode::UNAVAILABLE;
      // ErrorJson names the code as the API does everywhere.
      nlohmann::json failure =
          OwnJson(ErrorJson(code, answer.status.error_message()));
      failure["replica"] = answer.replica;
      absl::StrAppend(&failures, failures.empty() ? "" : "; ", answer.replica,
                      " (", failure["code"].get<std::string>(), ": ",
                      answer.status.error_message(), ")");
      unanswered.push_back(std::move(failure));
      continue;
    }
    for (const v1::Session& session : answer.answer.sessions()) {
      nlohmann::json json = OwnJson(MessageJson(session));
      json["replica"] = answer.replica;
      sessions.push_back(std::move(json));
    }
    replicas.push_back({{"replica", answer.replica},
                        {"sessions", answer.answer.sessions_size()}});
  }
  if (replicas.empty()) {
    SetError(common_code.value_or(grpc::StatusCode::UNAVAILABLE),
             absl::StrCat("no replica answered ListSessions: ", failures),
             response);
    return;
  }
  std::stable_sort(sessions.begin(), sessions.end(),
                   [](const nlohmann::json& a, const nlohmann::json& b) {
                     return a["session_id"] < b["session_id"];
                   });
  nlohmann::json body = {{"sessions", std::move(sessions)},
                         {"replicas", replicas},
                         {"unanswered", unanswered}};
  if (!unanswered.empty()) {
    body["message"] = absl::StrCat(
        replicas.size(), " of ", replicas.size() + unanswered.size(),
        " replicas answered; the sessions of these are not listed: ", failures);
  }
  response.status = 200;
  response.set_content(
      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
      kJson);
}

void HttpServer::ServeWatch(const std::string& session_id,
                            const httplib::Request& request,
                            httplib::Response& response) {
  absl::StatusOr<v1::WatchSimilarityRequest> watch =
      WatchRequestFromQuery(session_id, request.params);
  if (!watch.ok()) {
    SetError(watch.status(), response);
    return;
  }
  if (event_streams_.fetch_add(1) >= kMaxEventStreams) {
    event_streams_.fetch_sub(1);
    SetError(grpc::StatusCode::RESOURCE_EXHAUSTED,
             absl::StrCat(kMaxEventStreams,
                          " event streams are open, the most ckad serves at "
                          "once; close one, or poll .../similarity"),
             response);
    return;
  }
  auto stream = std::make_shared<SimilarityEventStream>(options_.memory.get());
  absl::Status prepared = PrepareCall(
      request, session_id, /*with_deadline=*/false, stream->context());
  if (!prepared.ok()) {
    event_streams_.fetch_sub(1);
    SetError(prepared, response);
    return;
  }
  stream->Start(stub_.get(), *watch);
  // The first matrix comes at once; an error before it (unknown session,
  // bad query, token) is answered with its HTTP status, not as an event.
  std::string first;
  const SimilarityEventStream::Next next =
      stream->Wait(absl::Seconds(kCallDeadlineSeconds), &first);
  if (next != SimilarityEventStream::Next::kEvent) {
    stream->Cancel();
    stream->WaitDone();
    event_streams_.fetch_sub(1);
    const grpc::Status status = stream->status();
    if (next == SimilarityEventStream::Next::kTimeout) {
      SetError(grpc::StatusCode::DEADLINE_EXCEEDED,
               absl::StrCat("no matrix within ", kCallDeadlineSeconds, " s"),
               response);
    } else if (!status.ok()) {
      SetError(status.error_code(), status.error_message(), response);
    } else {
      SetError(grpc::StatusCode::UNAVAILABLE,
               "the watch ended before its first matrix", response);
    }
    return;
  }
  response.headers.erase("Cache-Control");
  response.set_header("Cache-Control", "no-cache");
  // Tells a proxy in front (nginx) not to buffer the events either.
  response.set_header("X-Accel-Buffering", "no");
  response.set_chunked_content_provider(
      "text/event-stream",
      [this, stream, first = std::move(first)](
          size_t /*offset*/, httplib::DataSink& sink) mutable {
        return StreamEvents(*stream, std::move(first), sink);
      },
      [this, stream](bool /*success*/) {
        stream->Cancel();
        stream->WaitDone();
        event_streams_.fetch_sub(1);
      });
}

bool HttpServer::StreamEvents(SimilarityEventStream& stream, std::string event,
                              httplib::DataSink& sink) {
  absl::Time last_write = absl::Now();
  bool ended = false;
  for (;;) {
    // Each event is written to the socket at once (a chunk of its own;
    // httplib compresses no text/event-stream).
    if (!event.empty()) {
      if (!sink.write(event.data(), event.size())) return false;
      last_write = absl::Now();
    }
    if (ended) {
      sink.done();
      return true;
    }
    if (stopped_.load()) {
      const std::string bye = absl::StrCat(
          "event: error\ndata: ",
          ErrorJson(grpc::StatusCode::UNAVAILABLE, "ckad is shutting down"),
          "\n\n");
      sink.write(bye.data(), bye.size());
      sink.done();
      return true;
    }
    switch (stream.Wait(kEventTick, &event)) {
      case SimilarityEventStream::Next::kEvent:
        break;
      case SimilarityEventStream::Next::kEnded:
        ended = true;
        break;
      case SimilarityEventStream::Next::kTimeout:
        // A client that has gone shows here (its socket reads EOF), within
        // a tick; the comment keeps proxies from timing the stream out.
        if (!sink.is_writable()) return false;
        if (absl::Now() - last_write >= kKeepAliveComment) {
          event = ": keepalive\n\n";
        }
        break;
    }
  }
}

void HttpServer::ServeMetrics(const httplib::Request& request,
                              httplib::Response& response) {
  if (options_.tokens != nullptr) {
    std::optional<std::string_view> authorization;
    std::string header;
    if (request.has_header("Authorization")) {
      header = request.get_header_value("Authorization");
      authorization = header;
    }
    absl::StatusOr<Caller> caller =
        Authorize(*options_.tokens, authorization, Role::kReader, "/metrics");
    if (!caller.ok()) {
      SetError(caller.status(), response);
      return;
    }
  }
  response.set_content(options_.metrics_text(),
                       "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace cka::server
