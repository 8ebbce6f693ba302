// cka_service_bench: ckad's figures as a service, against the real ckad binary
// started as a child process with a durable --data-dir:
//
//   transport   a raw gRPC bidi stream of batch-sized messages into a sink
//               that only acks (this binary again, with --serve-sink): what
//               the network path alone allows
//   end_to_end  batches of each workload through the real
//               cka::client::ActivationStreamer until acked, with activations
//               and with client-side Grams, and the latency of Submit itself;
//               the final W1 matrix
//   memory      ckad's RSS over many batches of one session, and the size of
//               a 256-stream session's state
//   queries     GetSimilarity of a 256 × 256 matrix while a streamer ingests
//
// Usage: cka_service_bench --ckad PATH --data DIR --json OUT.json [--quick]
// DIR/workloads.json lists the workloads ([{"name","streams","n","d"}, ...]);
// DIR/<name>/s<i>.npy holds stream i's float32 n × d activations.
//
// Every figure is a measurement of this run; nothing is asserted about time. A
// failure of ckad or of any call ends the run with a message and exit status
// 1; OUT.json is then not written (OUT.json.partial holds the sections that
// completed).
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "child_process.h"
#include "cka/client/activation_streamer.h"
#include "cka/client/batch.h"
#include "cka/client/client.h"
#include "cka/core/allocator.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "nlohmann/json.hpp"
#include "npy_reader.h"
#include "sink.h"

namespace cka::bench {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// ckad and the client both allow messages this large, so that one W3 batch
// (8 × 512 × 16384 float32 = 268 MB) is one message, as the other workloads'.
constexpr int kMaxMessageMb = 512;
constexpr char kSource[] = "bench";
constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kFlushTimeout = absl::Minutes(10);
constexpr int kMinBatches = 3;
// At least this many batches per end-to-end figure: with 8 of W3 (2 GiB), the
// last batch's computation, which no transfer overlaps, was an eighth of it.
constexpr int kMinEndToEndBatches = 16;
constexpr int kQueryStreams = 256;

#define BENCH_ASSIGN_OR_RETURN(lhs, expr)       \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

#define BENCH_RETURN_IF_ERROR(expr)              \
  do {                                           \
    const absl::Status bench_status = (expr);    \
    if (!bench_status.ok()) return bench_status; \
  } while (false)

// What the command line asks for.
struct BenchConfig {
  std::string ckad;       // path of the ckad binary
  std::string data;       // the workloads' directory
  std::string json_path;  // where the report goes
  bool quick = false;
  std::string work_dir;  // temporary: ckad's data directories and logs
  // Which sections run (all by default): transport, end_to_end, memory,
  // queries.
  std::set<std::string> sections = {"transport", "end_to_end", "memory",
                                    "queries"};
  // Batch counts at which the memory section reads ckad's RSS (default 1000,
  // 10000; quick 20, 200).
  std::vector<int64_t> memory_checkpoints;
};

// A workload: `streams` layers of n × d float32 activations (row-major, element
// (i, j) at i * d + j), sent as one batch of layers "s0", "s1", ...
struct Workload {
  std::string name;
  int streams = 0;
  int64_t n = 0;
  int64_t d = 0;
  std::vector<std::string> layers;  // n · d · 4 bytes each

  int64_t batch_bytes() const {
    return static_cast<int64_t>(streams) * n * d * 4;
  }
};

std::string LayerName(int i) { return absl::StrCat("s", i); }
std::string StreamName(int i) {
  return absl::StrCat(kSource, "/", LayerName(i));
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}
double Megabytes(int64_t bytes) { return static_cast<double>(bytes) / 1e6; }

// Returns the nearest-rank `p`-quantile (0 < p <= 1) of `values`; 0 when empty.
double Quantile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(p * values.size()));
  return values[std::max<size_t>(rank, 1) - 1];
}

// ---------------------------------------------------------------------------
// Workloads

absl::StatusOr<int64_t> PositiveField(const Json& entry, const char* field,
                                      const std::string& where) {
  if (!entry.contains(field) || !entry[field].is_number_integer() ||
      entry[field].get<int64_t>() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": field '", field, "' must be a positive integer"));
  }
  return entry[field].get<int64_t>();
}

absl::StatusOr<std::vector<Workload>> LoadWorkloads(const std::string& dir) {
  const std::string list_path = dir + "/workloads.json";
  std::ifstream in(list_path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", list_path));
  std::stringstream text;
  text << in.rdbuf();
  const Json list =
      Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!list.is_array() || list.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        list_path, ": expected a non-empty JSON array of workloads"));
  }
  std::vector<Workload> workloads;
  for (const Json& entry : list) {
    if (!entry.is_object() || !entry.contains("name") ||
        !entry["name"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(list_path, ": every workload needs a string 'name'"));
    }
    Workload w;
    w.name = entry["name"].get<std::string>();
    const std::string where = absl::StrCat(list_path, " workload ", w.name);
    BENCH_ASSIGN_OR_RETURN(streams, PositiveField(entry, "streams", where));
    BENCH_ASSIGN_OR_RETURN(n, PositiveField(entry, "n", where));
    BENCH_ASSIGN_OR_RETURN(d, PositiveField(entry, "d", where));
    w.streams = static_cast<int>(streams);
    w.n = n;
    w.d = d;
    for (int i = 0; i < w.streams; ++i) {
      const std::string path = absl::StrCat(dir, "/", w.name, "/s", i, ".npy");
      BENCH_ASSIGN_OR_RETURN(array, client::ReadNpyFile(path));
      if (array.dtype != client::NpyArray::DType::kFloat32 ||
          array.shape != std::vector<int64_t>{w.n, w.d}) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": expected float32 of shape (", w.n, ", ", w.d,
                         ") as workloads.json says"));
      }
      w.layers.push_back(std::move(array.data));
    }
    workloads.push_back(std::move(w));
  }
  return workloads;
}

// Returns a workload of `streams` layers of seeded standard normal n × d data.
Workload SyntheticWorkload(std::string name, int streams, int64_t n,
                           int64_t d) {
  Workload w{std::move(name), streams, n, d, {}};
  std::mt19937 rng(17);
  std::normal_distribution<float> normal;
  for (int i = 0; i < streams; ++i) {
    std::vector<float> values(static_cast<size_t>(n * d));
    for (float& v : values) v = normal(rng);
    w.layers.emplace_back(reinterpret_cast<const char*>(values.data()),
                          values.size() * sizeof(float));
  }
  return w;
}

// Returns a batch of every layer of `w`, each a copy of the workload's data
// that the batch owns (Submit moves it into the wire message without copying).
client::Batch MakeBatch(const Workload& w, std::string batch_id, int64_t step) {
  client::Batch batch(std::move(batch_id), step);
  for (int i = 0; i < w.streams; ++i) {
    std::string bytes = w.layers[i];
    batch.AddActivations(LayerName(i), std::move(bytes), {w.n, w.d},
                         v1::FLOAT32);
  }
  return batch;
}

// A session config with the workload's streams declared and the default
// measure (linear, unbiased).
v1::SessionConfig DeclaredStreams(const Workload& w) {
  v1::SessionConfig config;
  for (int i = 0; i < w.streams; ++i) config.add_streams(StreamName(i));
  return config;
}

// The latest workload named `name`, or the first one (the --quick directory
// holds one tiny workload).
const Workload& WorkloadOrFirst(const std::vector<Workload>& workloads,
                                const std::string& name) {
  for (const Workload& w : workloads) {
    if (w.name == name) return w;
  }
  return workloads.front();
}

// ---------------------------------------------------------------------------
// ckad as a child process

client::ClientOptions BenchClientOptions(const std::string& server) {
  client::ClientOptions options;
  options.server = server;
  options.max_message_bytes = int64_t{kMaxMessageMb} << 20;
  options.default_deadline = absl::Seconds(60);
  return options;
}

// A ckad child process on 127.0.0.1 (a port it picks) with a durable data
// directory of its own, and a client for it. The destructor stops ckad and
// removes the directory.
class CkadInstance {
 public:
  // Starts `config.ckad` as `name` and waits until it serves. Unavailable with
  // ckad's log when it exits or does not answer.
  static absl::StatusOr<std::unique_ptr<CkadInstance>> Start(
      const BenchConfig& config, const std::string& name) {
    const std::string data_dir = absl::StrCat(config.work_dir, "/", name);
    std::error_code error;
    fs::create_directories(data_dir, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("cannot create ", data_dir, ": ", error.message()));
    }
    BENCH_ASSIGN_OR_RETURN(
        process, ChildProcess::Start(
                     {config.ckad, "--listen", "127.0.0.1:0", "--data-dir",
                      data_dir, "--max-message-mb", absl::StrCat(kMaxMessageMb),
                      "--log-level", "info"},
                     data_dir + ".log"));
    auto ckad = std::unique_ptr<CkadInstance>(
        new CkadInstance(std::move(process), data_dir));
    // "ckad listening on 127.0.0.1:<port> (...": the port is up to the space.
    BENCH_ASSIGN_OR_RETURN(
        rest, ckad->process_->AwaitLogLine("ckad listening on 127.0.0.1:",
                                           kStartTimeout));
    int port = 0;
    if (!absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &port)) {
      return absl::InternalError(absl::StrCat(
          "cannot read ckad's port from its log line '", rest, "'"));
    }
    ckad->address_ = absl::StrCat("127.0.0.1:", port);
    BENCH_ASSIGN_OR_RETURN(
        client, client::Client::Create(BenchClientOptions(ckad->address_)));
    ckad->client_ = std::move(client);
    absl::StatusOr<client::ServingStatus> health =
        ckad->client_->Health("", kStartTimeout);
    if (!health.ok() || *health != client::ServingStatus::kServing) {
      return absl::UnavailableError(
          absl::StrCat("ckad at ", ckad->address_, " is not serving: ",
                       health.ok() ? client::ServingStatusName(*health)
                                   : health.status().ToString(),
                       "; log:\n", ckad->process_->LogTail()));
    }
    return ckad;
  }

  ~CkadInstance() {
    Stop().IgnoreError();
    std::error_code ignored;
    fs::remove_all(data_dir_, ignored);
  }

  // Sends SIGTERM and waits for ckad to drain and exit; Internal (with its
  // log) unless it exits with status 0.
  absl::Status Stop() { return process_->Stop(); }

  client::Client& client() { return *client_; }
  ChildProcess& process() { return *process_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& address() const { return address_; }

 private:
  CkadInstance(std::unique_ptr<ChildProcess> process, std::string data_dir)
      : process_(std::move(process)), data_dir_(std::move(data_dir)) {}

  std::unique_ptr<ChildProcess> process_;
  const std::string data_dir_;
  std::string address_;
  std::unique_ptr<client::Client> client_;
};

// Waits for every submitted batch; an error when any was rejected.
absl::Status FlushAll(client::ActivationStreamer& streamer) {
  BENCH_ASSIGN_OR_RETURN(errors, streamer.Flush(absl::Now() + kFlushTimeout));
  if (!errors.empty()) {
    return absl::Status(
        errors.front().code,
        absl::StrCat(errors.size(), " batches rejected; the first, '",
                     errors.front().batch_id, "': ", errors.front().message));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> NewStreamer(
    CkadInstance& ckad, const std::string& session_id, bool reduce_to_gram) {
  client::StreamerOptions options;
  options.session_id = session_id;
  options.source = kSource;
  options.reduce_to_gram = reduce_to_gram;
  return client::ActivationStreamer::Create(ckad.client(), std::move(options));
}

// ---------------------------------------------------------------------------
// transport

absl::StatusOr<Json> RunTransport(const BenchConfig& config,
                                  const std::vector<Workload>& workloads) {
  std::error_code error;
  const std::string self = fs::read_symlink("/proc/self/exe", error).string();
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot find this binary: ", error.message()));
  }
  BENCH_ASSIGN_OR_RETURN(
      sink, ChildProcess::Start({self, "--serve-sink", "--max-message-mb",
                                 absl::StrCat(kMaxMessageMb)},
                                config.work_dir + "/sink.log"));
  BENCH_ASSIGN_OR_RETURN(
      address, sink->AwaitLogLine(kSinkListeningMarker, kStartTimeout));
  // The channel and the window of a real client (cka::client).
  const std::shared_ptr<grpc::Channel> channel =
      client::MakeChannel(BenchClientOptions(address));
  const int window = static_cast<int>(client::StreamerOptions().max_in_flight);
  const absl::Duration duration =
      config.quick ? absl::Milliseconds(300) : absl::Seconds(3);

  Json figures = Json::array();
  for (const Workload& w : workloads) {
    std::vector<int64_t> parts;
    for (const std::string& layer : w.layers)
      parts.push_back(static_cast<int64_t>(layer.size()));
    // The CPU that moving the bytes takes, both ends together: the part of
    // the cores that end to end cannot give to the computation.
    // Read after the warm-up, so that building the message and growing the
    // flow-control windows are not counted. A sink whose CPU time cannot be
    // read fails here rather than count as no CPU.
    BENCH_RETURN_IF_ERROR(sink->CpuSeconds().status());
    auto cpu_seconds = [&sink] {
      const absl::StatusOr<double> sink_cpu = sink->CpuSeconds();
      // std::clock: this process's CPU time, all threads.
      return static_cast<double>(std::clock()) / CLOCKS_PER_SEC +
             sink_cpu.value_or(0.0);
    };
    BENCH_ASSIGN_OR_RETURN(
        result, StreamToSink(channel, parts, window, duration, kMinBatches,
                             cpu_seconds));
    const double cpu_per_message = result.cpu_seconds / result.messages;
    const double mb_per_s =
        Megabytes(result.message_bytes * result.messages) / result.seconds;
    const double messages_per_s = result.messages / result.seconds;
    std::printf(
        "transport   %-6s %10lld B/message  %6lld messages in %6.2f s  "
        "%9.1f MB/s  %9.1f messages/s  %.2f ms CPU/message\n",
        w.name.c_str(), static_cast<long long>(result.message_bytes),
        static_cast<long long>(result.messages), result.seconds, mb_per_s,
        messages_per_s, cpu_per_message * 1e3);
    figures.push_back({{"workload", w.name},
                       {"message_bytes", result.message_bytes},
                       {"messages", result.messages},
                       {"seconds", result.seconds},
                       {"mb_per_s", mb_per_s},
                       {"messages_per_s", messages_per_s},
                       {"cpu_seconds_per_message", cpu_per_message}});
  }
  BENCH_RETURN_IF_ERROR(sink->Stop());
  return figures;
}

// ---------------------------------------------------------------------------
// end_to_end

// CPU time of the calling thread, in µs.
double ThreadCpuMicros() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

// Returns the wall time (µs) of a fixed piece of arithmetic, about 20 µs on
// the machines measured: a chain of dependent multiply-adds that touches no
// memory, so that every run does the same work.
double FixedWorkMicros() {
  const Clock::time_point start = Clock::now();
  volatile double x = 1.0;
  for (int i = 0; i < 5000; ++i) x = x * 1.0000001 + 1e-9;
  return Seconds(Clock::now() - start) * 1e6;
}

// Time inside Submit per batch (µs): wall clock, and the CPU time of the
// calling thread. Wall time minus CPU time is time the thread waited: for a
// lock, or for a core that other processes held. The control is
// FixedWorkMicros right after each Submit: its p99 above its p50 is what the
// machine adds to any short call at that moment (interrupts, the hypervisor).
struct SubmitTimes {
  std::vector<double> wall_us, cpu_us, control_us;
};

// Submits `batches` batches of `w` into a new session at one per `interval` —
// a training loop that spends `interval` computing between batches — and
// returns the time inside Submit per batch. With the interval above ckad's
// time per batch, the queue has room and Submit never waits for it: this is
// the cost a training step pays, without backpressure.
absl::StatusOr<SubmitTimes> PacedSubmitTimes(
    CkadInstance& ckad, const Workload& w, bool reduce_to_gram,
    const std::string& session_id, int64_t batches, absl::Duration interval) {
  BENCH_RETURN_IF_ERROR(
      ckad.client().CreateSession(session_id, DeclaredStreams(w)).status());
  BENCH_ASSIGN_OR_RETURN(streamer,
                         NewStreamer(ckad, session_id, reduce_to_gram));
  SubmitTimes times;
  absl::Time next = absl::Now();
  for (int64_t i = 0; i < batches; ++i) {
    // Built outside the timed call, as a training step produces its tensors.
    client::Batch batch = MakeBatch(w, absl::StrCat("paced-", i), i);
    absl::SleepFor(next - absl::Now());
    next += interval;
    const double cpu_before = ThreadCpuMicros();
    const Clock::time_point before = Clock::now();
    const absl::Status queued = streamer->Submit(std::move(batch));
    times.wall_us.push_back(Seconds(Clock::now() - before) * 1e6);
    times.cpu_us.push_back(ThreadCpuMicros() - cpu_before);
    times.control_us.push_back(FixedWorkMicros());
    BENCH_RETURN_IF_ERROR(queued);
  }
  BENCH_RETURN_IF_ERROR(FlushAll(*streamer));
  BENCH_RETURN_IF_ERROR(streamer->Close(absl::Now() + kFlushTimeout).status());
  return times;
}

// Streams about `target_bytes` of batches of `w` (at least `min_batches`) into
// a new session and waits for every ack. The batches are built before the clock
// starts, so that the figure holds the client library and ckad only.
// The paced run then lasts about `paced_time`.
absl::StatusOr<Json> StreamWorkload(CkadInstance& ckad, const Workload& w,
                                    bool reduce_to_gram, int64_t target_bytes,
                                    int64_t min_batches,
                                    absl::Duration paced_time,
                                    const std::string& session_id) {
  const char* mode = reduce_to_gram ? "gram_reduction" : "activations";
  BENCH_RETURN_IF_ERROR(
      ckad.client().CreateSession(session_id, DeclaredStreams(w)).status());
  BENCH_ASSIGN_OR_RETURN(streamer,
                         NewStreamer(ckad, session_id, reduce_to_gram));
  const int64_t batches =
      std::max<int64_t>(min_batches, target_bytes / w.batch_bytes());
  std::vector<client::Batch> prepared;
  for (int64_t i = 0; i < batches; ++i)
    prepared.push_back(MakeBatch(w, absl::StrCat(mode, "-", i), i));

  // Untimed warm-up on the same stream, as for the transport ceiling: gRPC's
  // flow-control windows grow over the first messages.
  for (int64_t i = 0; i < kWarmupMessages; ++i) {
    BENCH_RETURN_IF_ERROR(streamer->Submit(
        MakeBatch(w, absl::StrCat(mode, "-warmup-", i), batches + i)));
  }
  BENCH_RETURN_IF_ERROR(FlushAll(*streamer));

  std::vector<double> submit_us;
  const Clock::time_point start = Clock::now();
  for (client::Batch& batch : prepared) {
    const Clock::time_point before = Clock::now();
    const absl::Status queued = streamer->Submit(std::move(batch));
    submit_us.push_back(Seconds(Clock::now() - before) * 1e6);
    BENCH_RETURN_IF_ERROR(queued);
  }
  BENCH_RETURN_IF_ERROR(FlushAll(*streamer));
  const double seconds = Seconds(Clock::now() - start);
  const client::StreamerStats stats = streamer->stats();
  BENCH_RETURN_IF_ERROR(streamer->Close(absl::Now() + kFlushTimeout).status());

  const int64_t layers = (batches + kWarmupMessages) * w.streams;
  if (reduce_to_gram && stats.gram_reduced_layers != layers) {
    return absl::InternalError(absl::StrCat(
        w.name, " gram_reduction: only ", stats.gram_reduced_layers, " of ",
        layers, " layers were sent as Grams"));
  }
  BENCH_ASSIGN_OR_RETURN(session, ckad.client().GetSession(session_id));
  if (session.batches_applied() != batches + kWarmupMessages) {
    return absl::InternalError(absl::StrCat(
        w.name, " ", mode, ": ckad applied ", session.batches_applied(), " of ",
        batches + kWarmupMessages, " batches"));
  }
  const double mb_per_s = Megabytes(batches * w.batch_bytes()) / seconds;
  // Submit at 80 % of the rate just measured, so that ckad keeps up.
  const absl::Duration interval = absl::Seconds(1.25 * seconds / batches);
  // Up to 128 batches, so that p99 is not simply the largest of a few.
  const int64_t paced_batches = std::clamp<int64_t>(
      static_cast<int64_t>(paced_time / interval), kMinBatches, 128);
  BENCH_ASSIGN_OR_RETURN(
      paced, PacedSubmitTimes(ckad, w, reduce_to_gram, session_id + "-paced",
                              paced_batches, interval));
  Json figure = {{"workload", w.name},
                 {"mode", mode},
                 {"batches", batches},
                 {"seconds", seconds},
                 {"batches_per_s", batches / seconds},
                 {"mb_per_s", mb_per_s},
                 {"submit_us_p50", Quantile(submit_us, 0.5)},
                 {"submit_us_p99", Quantile(submit_us, 0.99)},
                 {"submit_us_max", Quantile(submit_us, 1.0)},
                 {"paced_batches", paced_batches},
                 {"paced_interval_ms", absl::ToDoubleMilliseconds(interval)},
                 {"paced_submit_us_p50", Quantile(paced.wall_us, 0.5)},
                 {"paced_submit_us_p99", Quantile(paced.wall_us, 0.99)},
                 {"paced_submit_us_max", Quantile(paced.wall_us, 1.0)},
                 {"paced_submit_cpu_us_p50", Quantile(paced.cpu_us, 0.5)},
                 {"paced_submit_cpu_us_p99", Quantile(paced.cpu_us, 0.99)},
                 {"paced_control_us_p50", Quantile(paced.control_us, 0.5)},
                 {"paced_control_us_p99", Quantile(paced.control_us, 0.99)}};
  std::printf(
      "end_to_end  %-6s %-14s %6lld batches in %6.2f s  %8.2f batches/s  "
      "%8.1f MB/s  submit p50 %.0f us, p99 %.0f us, max %.0f us\n",
      w.name.c_str(), mode, static_cast<long long>(batches), seconds,
      batches / seconds, mb_per_s, figure["submit_us_p50"].get<double>(),
      figure["submit_us_p99"].get<double>(),
      figure["submit_us_max"].get<double>());
  std::printf(
      "end_to_end  %-6s %-14s paced at %.1f ms/batch (%lld batches): submit "
      "p50 %.0f us, p99 %.0f us, max %.0f us (the caller's CPU time: p50 "
      "%.0f us, p99 %.0f us; fixed-work control: p50 %.0f us, p99 %.0f us)\n",
      w.name.c_str(), mode, absl::ToDoubleMilliseconds(interval),
      static_cast<long long>(paced_batches),
      figure["paced_submit_us_p50"].get<double>(),
      figure["paced_submit_us_p99"].get<double>(),
      figure["paced_submit_us_max"].get<double>(),
      figure["paced_submit_cpu_us_p50"].get<double>(),
      figure["paced_submit_cpu_us_p99"].get<double>(),
      figure["paced_control_us_p50"].get<double>(),
      figure["paced_control_us_p99"].get<double>());
  return figure;
}

absl::StatusOr<Json> FinalMatrix(CkadInstance& ckad, const Workload& w,
                                 const std::string& session_id) {
  v1::GetSimilarityRequest request;
  request.set_session_id(session_id);
  BENCH_ASSIGN_OR_RETURN(matrix, ckad.client().GetSimilarity(request));
  const int rows = matrix.rows_size();
  if (rows != w.streams || matrix.cols_size() != rows ||
      matrix.values_size() != rows * rows ||
      matrix.batches_size() != rows * rows) {
    return absl::InternalError(
        absl::StrCat("GetSimilarity of ", session_id, ": ", rows, " × ",
                     matrix.cols_size(), " with ", matrix.values_size(),
                     " values; expected ", w.streams, " × ", w.streams));
  }
  Json values = Json::array();
  for (int r = 0; r < rows; ++r) {
    Json row = Json::array();
    for (int c = 0; c < rows; ++c) row.push_back(matrix.values(r * rows + c));
    values.push_back(std::move(row));
  }
  const int64_t batches =
      *std::min_element(matrix.batches().begin(), matrix.batches().end());
  std::printf("final_matrix %s: %d × %d, %lld batches, CKA(s0, s1) = %.6f\n",
              w.name.c_str(), rows, rows, static_cast<long long>(batches),
              rows > 1 ? matrix.values(1) : matrix.values(0));
  return Json{{"workload", w.name},
              {"streams", Json(std::vector<std::string>(matrix.rows().begin(),
                                                        matrix.rows().end()))},
              {"values", std::move(values)},
              {"batches", batches}};
}

absl::StatusOr<Json> RunEndToEnd(const BenchConfig& config,
                                 const std::vector<Workload>& workloads,
                                 Json* final_matrix) {
  BENCH_ASSIGN_OR_RETURN(ckad, CkadInstance::Start(config, "end_to_end"));
  // About 2 GiB per figure, and at least kMinEndToEndBatches: a few seconds
  // of ckad's work per workload.
  const int64_t target_bytes =
      config.quick ? int64_t{16} << 20 : int64_t{2} << 30;
  const absl::Duration paced_time =
      config.quick ? absl::Milliseconds(100) : absl::Seconds(6);
  const Workload& matrix_workload = WorkloadOrFirst(workloads, "W1");
  Json figures = Json::array();
  for (const Workload& w : workloads) {
    for (bool gram : {false, true}) {
      const std::string session_id =
          absl::StrCat("e2e-", w.name, gram ? "-gram" : "-activations");
      BENCH_ASSIGN_OR_RETURN(
          figure,
          StreamWorkload(*ckad, w, gram, target_bytes,
                         config.quick ? kMinBatches : kMinEndToEndBatches,
                         paced_time, session_id));
      figures.push_back(std::move(figure));
      if (&w == &matrix_workload && !gram) {
        BENCH_ASSIGN_OR_RETURN(matrix, FinalMatrix(*ckad, w, session_id));
        *final_matrix = std::move(matrix);
      }
    }
  }
  BENCH_RETURN_IF_ERROR(ckad->Stop());
  return figures;
}

// ---------------------------------------------------------------------------
// memory

double MemoryMb(int64_t bytes) {
  return static_cast<double>(bytes) / double{1 << 20};
}

// Sends one batch of 256 small layers into a new session (so that every pair
// has sums), stops ckad, and returns the size of the session as
// `ckad --export-session` writes it, and ckad's RSS growth: the API's Session
// message carries no state size.
absl::StatusOr<Json> SessionStateFigure(const BenchConfig& config) {
  BENCH_ASSIGN_OR_RETURN(ckad, CkadInstance::Start(config, "state256"));
  const Workload w = SyntheticWorkload("state256", kQueryStreams, 16, 8);
  const std::string session_id = "state256";
  BENCH_ASSIGN_OR_RETURN(before, ckad->process().Memory());
  BENCH_RETURN_IF_ERROR(
      ckad->client().CreateSession(session_id, DeclaredStreams(w)).status());
  BENCH_ASSIGN_OR_RETURN(streamer, NewStreamer(*ckad, session_id, false));
  BENCH_RETURN_IF_ERROR(streamer->Submit(MakeBatch(w, "state-0", 0)));
  BENCH_RETURN_IF_ERROR(FlushAll(*streamer));
  BENCH_RETURN_IF_ERROR(streamer->Close(absl::Now() + kFlushTimeout).status());
  BENCH_ASSIGN_OR_RETURN(after, ckad->process().Memory());
  BENCH_ASSIGN_OR_RETURN(session, ckad->client().GetSession(session_id));
  BENCH_RETURN_IF_ERROR(ckad->Stop());

  // The session's complete state as ckad exports it (Session::Serialize():
  // config, sums per bucket, applied batch ids).
  const std::string export_file = config.work_dir + "/state256.export";
  BENCH_ASSIGN_OR_RETURN(
      exporter, ChildProcess::Start({config.ckad, "--data-dir",
                                     ckad->data_dir(), "--export-session",
                                     session_id, "--export-file", export_file},
                                    config.work_dir + "/export.log"));
  BENCH_RETURN_IF_ERROR(exporter->Wait(kStartTimeout));
  std::error_code error;
  const int64_t export_bytes =
      static_cast<int64_t>(fs::file_size(export_file, error));
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot read ", export_file, ": ", error.message()));
  }
  const double rss_delta_mb = MemoryMb(after.rss_bytes - before.rss_bytes);
  std::printf(
      "memory      session of %d streams: %lld bytes of sums (GetSession "
      "state_bytes), %lld bytes exported, ckad RSS +%.1f MB\n",
      kQueryStreams, static_cast<long long>(session.state_bytes()),
      static_cast<long long>(export_bytes), rss_delta_mb);
  return Json{{"session_state_bytes_256_streams", session.state_bytes()},
              {"session_state_bytes_source",
               "GetSession state_bytes: the running sums of every pair"},
              {"session_export_bytes_256_streams", export_bytes},
              {"session_state_rss_delta_mb_256_streams", rss_delta_mb}};
}

// How long the memory section leaves ckad idle before its second reading.
constexpr absl::Duration kIdleWait = absl::Seconds(3);

absl::StatusOr<Json> RunMemory(const BenchConfig& config,
                               const std::vector<Workload>& workloads) {
  const Workload& w = WorkloadOrFirst(workloads, "W1");
  const std::vector<int64_t> checkpoints =
      !config.memory_checkpoints.empty() ? config.memory_checkpoints
      : config.quick                     ? std::vector<int64_t>{20, 200}
                                         : std::vector<int64_t>{1000, 10000};
  const int64_t progress_every = config.quick ? 100 : 500;

  BENCH_ASSIGN_OR_RETURN(ckad, CkadInstance::Start(config, "memory"));
  BENCH_ASSIGN_OR_RETURN(start_memory, ckad->process().Memory());
  const std::string session_id = "memory";
  BENCH_RETURN_IF_ERROR(
      ckad->client().CreateSession(session_id, DeclaredStreams(w)).status());
  BENCH_ASSIGN_OR_RETURN(streamer, NewStreamer(*ckad, session_id, false));
  std::printf("memory      %s: ckad RSS at start %.1f MB\n", w.name.c_str(),
              MemoryMb(start_memory.rss_bytes));

  Json points = Json::array();
  const Clock::time_point start = Clock::now();
  int64_t sent = 0;
  for (int64_t checkpoint : checkpoints) {
    for (; sent < checkpoint; ++sent) {
      BENCH_RETURN_IF_ERROR(
          streamer->Submit(MakeBatch(w, absl::StrCat("m-", sent), sent)));
      if ((sent + 1) % progress_every == 0 && sent + 1 < checkpoint) {
        std::printf("memory      ... %lld batches submitted (%.0f s)\n",
                    static_cast<long long>(sent + 1),
                    Seconds(Clock::now() - start));
        std::fflush(stdout);
      }
    }
    BENCH_RETURN_IF_ERROR(FlushAll(*streamer));
    BENCH_ASSIGN_OR_RETURN(memory, ckad->process().Memory());
    // Then idle: ckad returns its free pages once it has been idle for a
    // second (server/freed_memory_limiter.h).
    absl::SleepFor(kIdleWait);
    BENCH_ASSIGN_OR_RETURN(idle, ckad->process().Memory());
    std::printf(
        "memory      %s: after %lld batches RSS %.1f MB, peak %.1f MB, "
        "%.1f MB after %.0f s idle (%.0f s)\n",
        w.name.c_str(), static_cast<long long>(checkpoint),
        MemoryMb(memory.rss_bytes), MemoryMb(memory.hwm_bytes),
        MemoryMb(idle.rss_bytes), absl::ToDoubleSeconds(kIdleWait),
        Seconds(Clock::now() - start));
    std::fflush(stdout);
    points.push_back({{"batches", checkpoint},
                      {"rss_mb", MemoryMb(memory.rss_bytes)},
                      {"vm_hwm_mb", MemoryMb(memory.hwm_bytes)},
                      {"idle_rss_mb", MemoryMb(idle.rss_bytes)},
                      {"idle_s", absl::ToDoubleSeconds(kIdleWait)}});
  }
  BENCH_RETURN_IF_ERROR(streamer->Close(absl::Now() + kFlushTimeout).status());
  BENCH_ASSIGN_OR_RETURN(session, ckad->client().GetSession(session_id));
  if (session.batches_applied() != sent) {
    return absl::InternalError(absl::StrCat("memory: ckad applied ",
                                            session.batches_applied(), " of ",
                                            sent, " batches"));
  }
  BENCH_RETURN_IF_ERROR(ckad->Stop());

  Json figure = {{"workload", w.name},
                 {"rss_mb_start", MemoryMb(start_memory.rss_bytes)},
                 {"checkpoints", std::move(points)}};
  BENCH_ASSIGN_OR_RETURN(state, SessionStateFigure(config));
  figure.update(state);
  return figure;
}

// ---------------------------------------------------------------------------
// queries

absl::StatusOr<Json> RunQueries(const BenchConfig& config) {
  const int queries = config.quick ? 10 : 200;
  const Workload w = SyntheticWorkload("queries", kQueryStreams, 16, 8);
  const std::string session_id = "queries";
  BENCH_ASSIGN_OR_RETURN(ckad, CkadInstance::Start(config, "queries"));
  BENCH_RETURN_IF_ERROR(
      ckad->client().CreateSession(session_id, DeclaredStreams(w)).status());
  BENCH_ASSIGN_OR_RETURN(streamer, NewStreamer(*ckad, session_id, false));
  BENCH_RETURN_IF_ERROR(streamer->Submit(MakeBatch(w, "q-0", 0)));
  BENCH_RETURN_IF_ERROR(FlushAll(*streamer));

  // Ingestion in the background for as long as the queries run.
  std::atomic<bool> stop{false};
  absl::Status ingest_status;
  std::thread ingest([&] {
    for (int64_t i = 1; !stop.load(); ++i) {
      absl::Status queued =
          streamer->Submit(MakeBatch(w, absl::StrCat("q-", i), i));
      if (!queued.ok()) {
        // After the stop, a Submit that races with Close fails as expected.
        if (!stop.load()) ingest_status = std::move(queued);
        return;
      }
    }
  });

  v1::GetSimilarityRequest request;
  request.set_session_id(session_id);
  const int64_t entries = int64_t{kQueryStreams} * kQueryStreams;
  // The generated stub, as Client::GetSimilarity calls it, to read ckad's own
  // time from the trailing metadata. Its connection is not the streamer's: a
  // dashboard is another process, not the training job. (Channels with equal
  // arguments share one connection through gRPC's global subchannel pool, so
  // client::MakeChannel would not do; a local pool gives this one its own.)
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageMb << 20);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  const std::unique_ptr<v1::Similarity::Stub> stub =
      v1::Similarity::NewStub(grpc::CreateCustomChannel(
          ckad->address(), grpc::InsecureChannelCredentials(), args));
  std::vector<double> query_ms, server_ms;
  absl::Status query_status;
  const int64_t acked_before = streamer->stats().acked;
  for (int q = 0; q < queries && query_status.ok(); ++q) {
    grpc::ClientContext context;
    client::Client::PrepareContext(ckad->client().options(), kFlushTimeout,
                                   &context, session_id);
    v1::SimilarityMatrix matrix;
    const Clock::time_point before = Clock::now();
    const grpc::Status status = stub->GetSimilarity(&context, request, &matrix);
    query_ms.push_back(Seconds(Clock::now() - before) * 1e3);
    if (!status.ok()) {
      query_status = absl::UnknownError(
          absl::StrCat("GetSimilarity failed: ", status.error_code(), " ",
                       status.error_message()));
      break;
    }
    if (matrix.values_size() != entries) {
      query_status = absl::InternalError(
          absl::StrCat("GetSimilarity returned ", matrix.values_size(),
                       " values, expected ", entries));
    }
    const auto& trailers = context.GetServerTrailingMetadata();
    auto it = trailers.find(client::kServerTimeMetadataKey);
    double ms = 0;
    if (it == trailers.end() ||
        !absl::SimpleAtod(std::string(it->second.data(), it->second.size()),
                          &ms)) {
      query_status = absl::InternalError(
          absl::StrCat("GetSimilarity answer without a number in its ",
                       client::kServerTimeMetadataKey, " trailer"));
    }
    server_ms.push_back(ms);
  }
  const int64_t ingested = streamer->stats().acked - acked_before;
  stop = true;
  // Closed before the join: Close ends a Submit blocked on a full queue even
  // when ckad no longer acks.
  absl::StatusOr<std::vector<client::BatchError>> closed =
      streamer->Close(absl::Now() + kFlushTimeout);
  ingest.join();
  BENCH_RETURN_IF_ERROR(query_status);
  BENCH_RETURN_IF_ERROR(ingest_status);
  BENCH_RETURN_IF_ERROR(closed.status());
  if (!closed->empty()) {
    return absl::Status(closed->front().code,
                        absl::StrCat("queries: ", closed->size(),
                                     " ingested batches rejected; the first: ",
                                     closed->front().message));
  }
  BENCH_RETURN_IF_ERROR(ckad->Stop());

  Json figure = {{"streams", kQueryStreams},
                 {"entries", entries},
                 {"queries", queries},
                 {"p50_ms", Quantile(query_ms, 0.5)},
                 {"p99_ms", Quantile(query_ms, 0.99)},
                 {"max_ms", Quantile(query_ms, 1.0)},
                 {"server_p50_ms", Quantile(server_ms, 0.5)},
                 {"server_p99_ms", Quantile(server_ms, 0.99)},
                 {"ingest_batches_during", ingested}};
  std::printf(
      "queries     %d × %d matrix, %d queries: p50 %.2f ms, p99 %.2f ms, "
      "max %.2f ms (in ckad: p50 %.2f ms, p99 %.2f ms); %lld batches "
      "ingested meanwhile\n",
      kQueryStreams, kQueryStreams, queries, figure["p50_ms"].get<double>(),
      figure["p99_ms"].get<double>(), figure["max_ms"].get<double>(),
      figure["server_p50_ms"].get<double>(),
      figure["server_p99_ms"].get<double>(), static_cast<long long>(ingested));
  return figure;
}

// ---------------------------------------------------------------------------

// Writes `report` to `path`.
absl::Status WriteJson(const Json& report, const std::string& path) {
  std::ofstream out(path);
  out << report.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Runs the sections in order. After each, the report so far goes to
// <json>.partial (a long run that fails keeps what it measured, under a name
// that no one takes for the whole report); at the end it becomes <json>.
absl::Status RunAll(const BenchConfig& config) {
  BENCH_ASSIGN_OR_RETURN(workloads, LoadWorkloads(config.data));
  const std::string partial_path = config.json_path + ".partial";
  std::error_code error;
  fs::remove(partial_path, error);  // an older run's
  Json report;
  report["quick"] = config.quick;
  report["machine"] = {{"cores", std::thread::hardware_concurrency()},
                       {"ckad", fs::absolute(config.ckad).string()}};
  std::printf("cka_service_bench: %u cores, ckad %s, %zu workloads%s\n",
              std::thread::hardware_concurrency(), config.ckad.c_str(),
              workloads.size(), config.quick ? " (quick)" : "");
  std::fflush(stdout);

  auto wanted = [&](const char* section) {
    return config.sections.count(section) > 0;
  };
  if (wanted("transport")) {
    BENCH_ASSIGN_OR_RETURN(transport, RunTransport(config, workloads));
    report["transport"] = std::move(transport);
    BENCH_RETURN_IF_ERROR(WriteJson(report, partial_path));
    std::fflush(stdout);
  }
  if (wanted("end_to_end")) {
    Json final_matrix;
    BENCH_ASSIGN_OR_RETURN(end_to_end,
                           RunEndToEnd(config, workloads, &final_matrix));
    report["end_to_end"] = std::move(end_to_end);
    report["final_matrix"] = std::move(final_matrix);
    BENCH_RETURN_IF_ERROR(WriteJson(report, partial_path));
    std::fflush(stdout);
  }
  if (wanted("memory")) {
    BENCH_ASSIGN_OR_RETURN(memory, RunMemory(config, workloads));
    report["memory"] = std::move(memory);
    BENCH_RETURN_IF_ERROR(WriteJson(report, partial_path));
    std::fflush(stdout);
  }
  if (wanted("queries")) {
    BENCH_ASSIGN_OR_RETURN(queries, RunQueries(config));
    report["queries"] = std::move(queries);
    BENCH_RETURN_IF_ERROR(WriteJson(report, partial_path));
  }
  fs::rename(partial_path, config.json_path, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot rename ", partial_path,
                                            " to ", config.json_path, ": ",
                                            error.message()));
  }
  std::printf("report written to %s\n", config.json_path.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace cka::bench

int main(int argc, char** argv) {
  cka::core::ReexecWithHugePages(argv);  // as ckad does
  // The allocator settings of ckad, for the sink and the client alike: the
  // transport ceiling and the end-to-end figures then differ in ckad alone.
  cka::core::KeepFreedMemoryForReuse();
  cka::bench::BenchConfig config;
  bool serve_sink = false;
  int sink_max_message_mb = cka::bench::kMaxMessageMb;
  std::string work_dir = "/tmp";
  CLI::App app(
      "cka_service_bench: ckad's transport, end-to-end ingestion, memory and "
      "query figures, against the real ckad binary");
  app.add_option("--ckad", config.ckad, "path of the ckad binary");
  app.add_option("--data", config.data,
                 "directory with workloads.json and <name>/s<i>.npy");
  app.add_option("--json", config.json_path, "where to write the report");
  app.add_option("--sections", config.sections,
                 "run only these sections (transport, end_to_end, memory, "
                 "queries)")
      ->delimiter(',')
      ->check(CLI::IsMember({"transport", "end_to_end", "memory", "queries"}));
  app.add_option("--memory-checkpoints", config.memory_checkpoints,
                 "batch counts at which to read ckad's RSS (default "
                 "1000,10000)")
      ->delimiter(',');
  app.add_flag("--quick", config.quick,
               "tiny counts, so that every section takes a few seconds");
  app.add_option("--work-dir", work_dir,
                 "where ckad's temporary data directories go (use a real "
                 "disk: ckad fsyncs its commits)")
      ->capture_default_str();
  // The sink of the transport figure: this binary, started by itself.
  app.add_flag("--serve-sink", serve_sink)->group("");
  app.add_option("--max-message-mb", sink_max_message_mb)->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (serve_sink) return cka::bench::RunSinkServer(sink_max_message_mb);
  if (config.ckad.empty() || config.data.empty() || config.json_path.empty()) {
    std::fprintf(stderr,
                 "cka_service_bench: --ckad, --data and --json are required\n"
                 "Run 'cka_service_bench --help' for the flags.\n");
    return 2;
  }
  if (access(config.ckad.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "cka_service_bench: --ckad %s: not an executable\n",
                 config.ckad.c_str());
    return 2;
  }

  std::string pattern = work_dir + "/cka_service_bench_XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "cka_service_bench: cannot create a directory in %s\n",
                 work_dir.c_str());
    return 1;
  }
  config.work_dir = pattern;
  const absl::Status done = cka::bench::RunAll(config);
  if (!done.ok()) {
    // The logs stay for the post-mortem.
    std::fprintf(stderr,
                 "cka_service_bench: %s\n(logs in %s; the sections completed "
                 "before the failure, if any, are in %s.partial)\n",
                 done.ToString().c_str(), config.work_dir.c_str(),
                 config.json_path.c_str());
    return 1;
  }
  std::error_code ignored;
  std::filesystem::remove_all(config.work_dir, ignored);
  return 0;
}
