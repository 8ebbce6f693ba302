// ckactl: the command-line client of ckad. See `ckactl --help`.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>
#include <tuple>

#include "absl/time/time.h"
#include "cka/client/client.h"
#include "ckactl/commands.h"

namespace {

constexpr char kStandardErrorHelp[] =
    "print each value's standard error: 'value ± SE' in tables (a value "
    "without one prints alone), a '<column> SE' column after each column in "
    "CSV, standard_errors beside values in JSON";

}  // namespace

int main(int argc, char** argv) {
  using cka::ckactl::CreateArgs;
  using cka::ckactl::QueryArgs;
  using cka::ckactl::SendArgs;

  CLI::App app{
      "ckactl: create CKA sessions, stream activations and read CKA matrices "
      "from ckad"};
  app.require_subcommand(1);
  std::string server = "127.0.0.1:50051";
  double timeout_s = 10;
  app.add_option("--server", server, "ckad address host:port")
      ->envname("CKAD_SERVER")
      ->capture_default_str();
  app.add_option("--timeout", timeout_s, "deadline of each call, seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  std::string token, tls_ca, tls_cert, tls_key, tls_server_name;
  bool tls = false;
  app.add_option("--token", token,
                 "bearer token for ckad's --auth-tokens (prefer the "
                 "environment variable: a flag shows in the process list)")
      ->envname("CKA_TOKEN");
  app.add_flag("--tls", tls,
               "connect with TLS, checking the server against the system's "
               "roots (implied by the other --tls-* options)");
  app.add_option("--tls-ca", tls_ca,
                 "PEM CA certificates to check the server's certificate");
  app.add_option("--tls-cert", tls_cert,
                 "PEM client certificate for mutual TLS (needs --tls-key)");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-server-name", tls_server_name,
                 "name to expect in the server's certificate (default: the "
                 "host of --server)");
  const auto formats = CLI::IsMember({"table", "csv", "json"});

  CreateArgs create;
  CLI::App* create_cmd =
      app.add_subcommand("create", "create a session (idempotent)");
  create_cmd->add_option("session", create.session_id, "session id")
      ->required();
  create_cmd->add_option(
      "--measure", create.measures,
      "name:kernel:estimator[:threshold], e.g. lin:linear:unbiased, "
      "rbf05:rbf:biased:0.5, or name:kind for the comparison family (kind "
      "cca_r2, cca_mean_rho, svcca, pwcca, regression_r2 or procrustes; needs "
      "--stream), e.g. cca:cca_r2 (repeatable; default linear:unbiased)");
  create_cmd->add_option(
      "--stream", create.streams,
      "declared stream source/layer (repeatable; required by exact)");
  create_cmd
      ->add_option("--step-bucket", create.step_bucket,
                   "steps per bucket, 0 = one")
      ->check(CLI::NonNegativeNumber);
  create_cmd->add_option(
      "--expect-source", create.expected_sources,
      "without --stream: a source every batch waits for, so that a job that "
      "starts late still pairs with earlier batches (repeatable)");
  create_cmd
      ->add_option("--join-window", create.join_window,
                   "without --stream: recent batches kept for streams first "
                   "seen later (0 = default 16)")
      ->check(CLI::Range(0, 4096));
  create_cmd->add_option("--format", create.format)
      ->check(CLI::IsMember({"table", "json"}));

  std::string list_format = "table";
  CLI::App* list_cmd = app.add_subcommand("list", "list sessions");
  list_cmd->add_option("--format", list_format)
      ->check(CLI::IsMember({"table", "json"}));

  std::string get_id, get_format = "table";
  CLI::App* get_cmd =
      app.add_subcommand("get", "show a session and its counters");
  get_cmd->add_option("session", get_id, "session id")->required();
  get_cmd->add_option("--format", get_format)
      ->check(CLI::IsMember({"table", "json"}));

  std::string delete_id;
  CLI::App* delete_cmd = app.add_subcommand("delete", "delete a session");
  delete_cmd->add_option("session", delete_id, "session id")->required();

  QueryArgs query;
  auto add_query = [&](CLI::App* cmd) {
    cmd->add_option("session", query.session_id, "session id")->required();
    cmd->add_option("--measure", query.measure,
                    "measure name (default: the first)");
    cmd->add_option("--rows", query.rows, "row streams (default: all)")
        ->delimiter(',');
    cmd->add_option("--cols", query.cols, "column streams (default: all)")
        ->delimiter(',');
    cmd->add_option_function<double>(
        "--blocks", [&](double v) { query.block_threshold = v; },
        "also list each source's runs of consecutive layers whose pairwise "
        "values all exceed this threshold (e.g. 0.95)");
    cmd->add_option_function<double>(
        "--block-share", [&](double v) { query.block_share = v; },
        "with --blocks: warn about a block longer than this share of its "
        "source's layers (default 0.5)");
    cmd->add_option_function<int64_t>(
        "--step-min", [&](int64_t v) { query.step_min = v; },
        "first step (bucket-aligned)");
    cmd->add_option_function<int64_t>(
        "--step-max", [&](int64_t v) { query.step_max = v; },
        "last step (bucket-aligned)");
    cmd->add_option("--format", query.format, "table, csv or json")
        ->check(formats);
    cmd->add_option("--precision", query.precision, "decimals")
        ->check(CLI::Range(0, 17));
    cmd->add_flag("--se", query.standard_errors, kStandardErrorHelp);
  };
  CLI::App* matrix_cmd = app.add_subcommand("matrix", "print the CKA matrix");
  add_query(matrix_cmd);
  CLI::App* series_cmd = app.add_subcommand(
      "series",
      "print the CKA of pairs (the i-th of --rows with the i-th of --cols) in "
      "each step bucket");
  series_cmd->add_option("session", query.session_id, "session id")->required();
  series_cmd->add_option("--measure", query.measure,
                         "measure name (default: the first)");
  series_cmd->add_option("--rows", query.rows, "row stream of each pair")
      ->delimiter(',')
      ->required();
  series_cmd->add_option("--cols", query.cols, "column stream of each pair")
      ->delimiter(',')
      ->required();
  series_cmd->add_option("--format", query.format, "table, csv or json")
      ->check(formats);
  series_cmd->add_option("--precision", query.precision, "decimals")
      ->check(CLI::Range(0, 17));
  series_cmd->add_flag("--se", query.standard_errors, kStandardErrorHelp);
  CLI::App* watch_cmd =
      app.add_subcommand("watch", "reprint the CKA matrix on every update");
  add_query(watch_cmd);
  watch_cmd
      ->add_option("--interval-ms", query.interval_ms,
                   "at most one update per interval")
      ->check(CLI::NonNegativeNumber);
  watch_cmd
      ->add_option("--count", query.count, "stop after N updates (0 = never)")
      ->check(CLI::NonNegativeNumber);

  SendArgs send;
  CLI::App* send_cmd = app.add_subcommand(
      "send", "stream one batch of activations from .npy files");
  send_cmd->add_option("--session", send.session_id, "session id")->required();
  send_cmd->add_option("--source", send.source,
                       "model/job name (streams are source/layer)");
  send_cmd->add_option("--layer", send.layer,
                       "layer name of a single file (default: stem)");
  send_cmd->add_option("--batch-id", send.batch_id, "batch id joining sources")
      ->required();
  send_cmd->add_option("--step", send.step, "training step");
  send_cmd->add_flag("--gram", send.gram,
                     "send n x n Grams instead of wide activations");
  send_cmd
      ->add_option("files", send.paths,
                   ".npy files or directories of layer.npy files")
      ->required();

  std::string health_service;
  CLI::App* health_cmd =
      app.add_subcommand("health", "print SERVING or NOT_SERVING");
  health_cmd->add_option("--service", health_service,
                         "service name (default: the server)");

  CLI11_PARSE(app, argc, argv);

  cka::client::ClientOptions options;
  options.server = server;
  options.default_deadline = absl::Seconds(timeout_s);
  options.bearer_token = token;
  options.use_tls = tls || !tls_ca.empty() || !tls_cert.empty() ||
                    !tls_key.empty() || !tls_server_name.empty();
  options.tls_server_name = tls_server_name;
  for (auto [flag, path, pem] :
       {std::tuple{"--tls-ca", &tls_ca, &options.tls_root_certs},
        std::tuple{"--tls-cert", &tls_cert, &options.tls_client_cert},
        std::tuple{"--tls-key", &tls_key, &options.tls_client_key}}) {
    if (path->empty()) continue;
    std::ifstream in(*path, std::ios::binary);
    if (!in) {
      std::cerr << "error: " << flag << " '" << *path
                << "': cannot read the file\n";
      return 1;
    }
    std::ostringstream text;
    text << in.rdbuf();
    *pem = text.str();
  }
  absl::StatusOr<std::unique_ptr<cka::client::Client>> client =
      cka::client::Client::Create(options);
  if (!client.ok()) {
    std::cerr << "error: " << client.status().message() << "\n";
    return 1;
  }
  cka::client::Client& c = **client;
  std::ostream& out = std::cout;
  std::ostream& err = std::cerr;
  if (*create_cmd) return cka::ckactl::RunCreate(c, create, out, err);
  if (*list_cmd) return cka::ckactl::RunList(c, list_format, out, err);
  if (*get_cmd) return cka::ckactl::RunGet(c, get_id, get_format, out, err);
  if (*delete_cmd) return cka::ckactl::RunDelete(c, delete_id, out, err);
  if (*matrix_cmd) return cka::ckactl::RunMatrix(c, query, out, err);
  if (*series_cmd) return cka::ckactl::RunSeries(c, query, out, err);
  if (*watch_cmd) return cka::ckactl::RunWatch(c, query, out, err);
  if (*send_cmd) return cka::ckactl::RunSend(c, send, out, err);
  if (*health_cmd) return cka::ckactl::RunHealth(c, health_service, out, err);
  return 1;
}
