// Bounded loopback load test: the real server in-process on 127.0.0.1:0 and 32
// concurrent ActivationStreamers (8 sessions × 4 sources, each source 4 layers
// of 64 × 256 float32 per batch) for CKA_LOAD_SECONDS seconds (default 60; 20
// under AddressSanitizer, which makes everything several times slower).
//
// Each streamer submits at a steady CKA_LOAD_RATE batches per second (default
// 10, i.e. 320 batches/s or 80 MiB/s in all; 2 under AddressSanitizer), as a
// training loop does once per step; CKA_LOAD_RATE=0 submits as fast as the
// queues take batches. A paced run measures what a batch waits when the server
// keeps up; a saturated one mostly measures the client queues (Little's law:
// 32 × 24 batches outstanding ÷ throughput).
//
// What must hold: no error anywhere (every Submit OK, every ack OK, no
// duplicate, no reconnect, no eviction); every streamer's submitted == acked;
// every entry of every final matrix counts exactly the batches both of its
// streams sent; the diagonal is 1; RSS, sampled every second from
// /proc/self/status, grows by less than kMaxRssGrowthMb after the warm-up.
// Printed: throughput, p50/p90/p99/max ack latency (Submit call → ack) and the
// RSS samples.
//
// The test runs twice: with state in memory only, and with a --data-dir of its
// own, where every ack waits for its group commit and the join buffers (these
// sessions declare their streams) are written as well. The data-dir run is
// shorter, to keep CI's time down (it runs in the RelWithDebInfo and the
// ASan+UBSan builds): CKA_LOAD_DATA_DIR_SECONDS (default 10; 6 under
// AddressSanitizer) at the same rate, unless CKA_LOAD_SECONDS is set, which
// sets both. At its end ckad is shut down and started again from the data
// dir: every session must answer the same counters (pending ones included)
// and the same matrix, bit for bit, and a resent batch is acked as a
// duplicate.
//
// Ack latency is observed without changing the client: acks arrive in order
// (StreamActivations answers every batch in order and the streamer never
// reconnects here, which is checked), so the k-th completion a streamer counts
// (stats().acked + stats().rejected) belongs to its k-th Submit. A sampler
// thread polls every streamer each kPollInterval and stamps the completions it
// sees; the latencies are therefore late by at most one poll interval plus the
// sampler's scheduling delay.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/client/activation_streamer.h"
#include "cka/client/batch.h"
#include "cka/client/client.h"
#include "cka/server/server.h"

#if defined(__SANITIZE_ADDRESS__)
#define CKA_LOAD_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CKA_LOAD_UNDER_ASAN 1
#endif
#endif

namespace cka::testing {
namespace {

constexpr int kSessions = 8;
constexpr int kSourcesPerSession = 4;
constexpr int kStreamers = kSessions * kSourcesPerSession;  // 32
constexpr int kLayers = 4;
constexpr int kRows = 64;       // n, examples per batch
constexpr int kFeatures = 256;  // d, features per example
// How many batches a source may run ahead of the slowest source of its
// session, as training jobs that read the same data loader do. It bounds the
// server's join buffer (a batch waits there until all four sources sent it),
// so that nothing is evicted and every matrix entry can be checked exactly.
constexpr int64_t kWindow = 16;
// Streamer bounds: small, like the server's per-stream window of 8, so that
// the client's share of the process's memory is bounded and filled during the
// warm-up (32 × (16 queued + 8 in flight) × 256 KiB ≤ 192 MiB at worst;
// queued batches share the payload buffers, so in practice far less).
constexpr int64_t kMaxQueueBatches = 16;
constexpr int64_t kMaxInFlight = 8;
// Distinct payload buffers shared by every batch (no per-batch allocation on
// the test side): 64 × 64 KiB.
constexpr int kPayloads = 64;
constexpr absl::Duration kPollInterval = absl::Milliseconds(1);

// RSS growth allowed after the warm-up. Everything that holds memory in this
// test is bounded and reaches its size during the warm-up: the streamers'
// queues and in-flight windows (above), the server's per-stream windows, the
// join buffers (kWindow batches per session), the running sums (16 × 16 per
// session). What legitimately keeps growing is small: the applied-batch set
// (tens of bytes per batch, ~1 MB per 10k batches) and the latency samples
// (4 bytes per batch). A leak of anything per batch — a payload (256 KiB), a
// kernel (32 KiB) or even an ack message — at the ≥ 100 batches/s this test
// reaches would exceed the bound within the run, while allocator and arena
// fragmentation stay well below it. Under ASan the quarantine (256 MB by
// default) fills as memory is freed, which it may still be doing after the
// warm-up, hence the larger figure there.
#ifdef CKA_LOAD_UNDER_ASAN
constexpr int64_t kDefaultSeconds = 20;
constexpr int64_t kDataDirDefaultSeconds = 6;
constexpr double kDefaultRate = 2;
constexpr double kMaxRssGrowthMb = 512;
#else
constexpr int64_t kDefaultSeconds = 60;
constexpr int64_t kDataDirDefaultSeconds = 10;
constexpr double kDefaultRate = 10;
constexpr double kMaxRssGrowthMb = 256;
#endif

// Where ckad keeps its state in a run.
enum class Storage { kMemory, kDataDir };

// Returns the environment variable `name` as a number >= 0, or `fallback`
// when it is unset, empty or negative.
double EnvNumber(const char* name, double fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  const double v = std::atof(env);
  return v >= 0 ? v : fallback;
}

// Returns VmRSS of this process in MiB, or -1 when it cannot be read.
double RssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::atof(line.c_str() + 6) / 1024.0;  // the figure is in kB
    }
  }
  return -1;
}

std::string StreamName(int session, int source, int layer) {
  return absl::StrCat("job", session, "-", source, "/l", layer);
}

// The submissions of one session's sources, for the window between them.
struct SessionProgress {
  absl::Mutex mu;
  int64_t submitted[kSourcesPerSession] ABSL_GUARDED_BY(mu) = {};
};

// Submit times of the batches of one streamer not yet seen completed, and the
// latencies of those that were.
struct AckTracker {
  absl::Mutex mu;
  std::deque<absl::Time> outstanding ABSL_GUARDED_BY(mu);
  int64_t completed ABSL_GUARDED_BY(mu) = 0;
  // Sampler thread only, until joined: every batch, and those submitted after
  // the warm-up (start-up — connections, first streams — excluded).
  std::vector<float> latency_ms;
  std::vector<float> steady_latency_ms;
};

double Percentile(std::vector<float> v, double p) {
  if (v.empty()) return NAN;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

// Returns what a client sees of session `id`: its counters and its matrix, as
// text that is equal only when every counter and every matrix value (as a
// double: protobuf prints the shortest text that reads back exactly) is.
std::string Answers(client::Client& c, const std::string& id) {
  absl::StatusOr<v1::Session> info = c.GetSession(id);
  if (!info.ok()) return info.status().ToString();
  v1::GetSimilarityRequest query;
  query.set_session_id(id);
  absl::StatusOr<v1::SimilarityMatrix> m = c.GetSimilarity(query);
  if (!m.ok()) return m.status().ToString();
  return absl::StrCat(info->ShortDebugString(), "\n", m->ShortDebugString());
}

class LoadTest : public ::testing::TestWithParam<Storage> {};

TEST_P(LoadTest, ThirtyTwoStreamersForABoundedTimeLoseNothing) {
  const bool durable = GetParam() == Storage::kDataDir;
  const double seconds = EnvNumber(
      "CKA_LOAD_SECONDS",
      durable ? EnvNumber("CKA_LOAD_DATA_DIR_SECONDS", kDataDirDefaultSeconds)
              : kDefaultSeconds);
  const double rate = EnvNumber("CKA_LOAD_RATE", kDefaultRate);
  ASSERT_GT(seconds, 0);
  const absl::Duration duration = absl::Seconds(seconds);
  // Zero: unpaced.
  const absl::Duration interval =
      rate > 0 ? absl::Seconds(1 / rate) : absl::ZeroDuration();
  const absl::Duration warmup = std::min(absl::Seconds(10), duration / 3);

  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.shutdown_grace = absl::Seconds(10);
  if (durable) {
    options.data_dir =
        absl::StrCat(::testing::TempDir(), "/cka_load_", getpid(), "_data_dir");
    std::filesystem::remove_all(options.data_dir);
  }
  absl::StatusOr<std::unique_ptr<server::Server>> started =
      server::Server::BuildAndStart(options);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<server::Server> server = *std::move(started);
  const std::string address = absl::StrCat("127.0.0.1:", server->port());

  client::ClientOptions client_options;
  client_options.server = address;
  client_options.default_deadline = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<client::Client>> admin =
      client::Client::Create(client_options);
  ASSERT_TRUE(admin.ok()) << admin.status();

  // Streams are declared so that each batch joins across all four sources
  // (an undeclared session completes a batch with the streams seen so far).
  for (int s = 0; s < kSessions; ++s) {
    v1::SessionConfig config;
    for (int k = 0; k < kSourcesPerSession; ++k) {
      for (int l = 0; l < kLayers; ++l) config.add_streams(StreamName(s, k, l));
    }
    absl::StatusOr<v1::Session> created =
        (*admin)->CreateSession(absl::StrCat("load-", s), config);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  std::vector<std::shared_ptr<const std::vector<float>>> payloads;
  {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal;
    for (int p = 0; p < kPayloads; ++p) {
      std::vector<float> x(static_cast<size_t>(kRows) * kFeatures);
      for (float& v : x) v = normal(rng);
      payloads.push_back(
          std::make_shared<const std::vector<float>>(std::move(x)));
    }
  }

  // Batch e0/`b` of streamer `i`: the same bytes whenever it is made.
  auto make_batch = [&payloads](int i, int64_t b) {
    client::Batch batch(absl::StrCat("e0/", b), b);
    for (int l = 0; l < kLayers; ++l) {
      const auto& payload = payloads[(i * 7 + b * kLayers + l) % kPayloads];
      client::LayerPayload layer;
      layer.layer = absl::StrCat("l", l);
      layer.shape = {kRows, kFeatures};
      layer.dtype = v1::FLOAT32;
      layer.bytes = client::LayerBytes(
          payload, reinterpret_cast<const char*>(payload->data()),
          payload->size() * sizeof(float));
      batch.mutable_layers().push_back(std::move(layer));
    }
    return batch;
  };

  // One client per streamer, as 32 training processes would have.
  std::vector<std::unique_ptr<client::Client>> clients;
  std::vector<std::unique_ptr<client::ActivationStreamer>> streamers;
  for (int i = 0; i < kStreamers; ++i) {
    absl::StatusOr<std::unique_ptr<client::Client>> c =
        client::Client::Create(client_options);
    ASSERT_TRUE(c.ok()) << c.status();
    client::StreamerOptions so;
    so.session_id = absl::StrCat("load-", i / kSourcesPerSession);
    so.source = absl::StrCat("job", i / kSourcesPerSession, "-",
                             i % kSourcesPerSession);
    so.max_queue_batches = kMaxQueueBatches;
    so.max_in_flight = kMaxInFlight;
    absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> st =
        client::ActivationStreamer::Create(**c, so);
    ASSERT_TRUE(st.ok()) << st.status();
    clients.push_back(*std::move(c));
    streamers.push_back(*std::move(st));
  }

  std::vector<SessionProgress> progress(kSessions);
  std::vector<AckTracker> trackers(kStreamers);
  std::vector<int64_t> sent(kStreamers, 0);
  std::vector<absl::Status> submit_errors(kStreamers);
  std::vector<std::vector<float>> submit_block_ms(kStreamers);
  std::atomic<bool> stop{false};
  std::atomic<int> streaming{kStreamers};

  // Samples RSS once a second.
  struct RssSample {
    double t;
    double mb;
  };
  std::vector<RssSample> rss;
  const absl::Time start = absl::Now();
  std::thread rss_thread([&] {
    while (!stop.load()) {
      rss.push_back({absl::ToDoubleSeconds(absl::Now() - start), RssMb()});
      absl::SleepFor(absl::Seconds(1));
    }
    rss.push_back({absl::ToDoubleSeconds(absl::Now() - start), RssMb()});
  });

  // Stamps completions (acks in order; see the file comment).
  std::thread sampler([&] {
    bool last_round = false;
    while (true) {
      const bool done = streaming.load() == 0;
      for (int i = 0; i < kStreamers; ++i) {
        const client::StreamerStats st = streamers[i]->stats();
        const int64_t completed = st.acked + st.rejected;
        const absl::Time now = absl::Now();
        AckTracker& t = trackers[i];
        absl::MutexLock lock(&t.mu);
        while (t.completed < completed && !t.outstanding.empty()) {
          const float ms = static_cast<float>(
              absl::ToDoubleMilliseconds(now - t.outstanding.front()));
          t.latency_ms.push_back(ms);
          if (t.outstanding.front() >= start + warmup) {
            t.steady_latency_ms.push_back(ms);
          }
          t.outstanding.pop_front();
          ++t.completed;
        }
      }
      if (last_round) break;
      last_round = done;  // one more round after every streamer closed
      absl::SleepFor(kPollInterval);
    }
  });

  std::vector<std::thread> threads;
  for (int i = 0; i < kStreamers; ++i) {
    threads.emplace_back([&, i] {
      const int s = i / kSourcesPerSession;
      const int k = i % kSourcesPerSession;
      SessionProgress& group = progress[s];
      // Streamers start spread over one interval, not all at once.
      const absl::Time first = start + interval * i / kStreamers;
      for (int64_t b = 0; !stop.load(); ++b) {
        if (interval > absl::ZeroDuration()) {
          // A late streamer catches up at once rather than drifting: the
          // offered load stays the configured rate.
          const absl::Duration wait = first + interval * b - absl::Now();
          if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
          if (stop.load()) break;
        }
        {
          absl::MutexLock lock(&group.mu);
          auto slowest_allows = [&group,
                                 b]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(group.mu) {
            return *std::min_element(group.submitted,
                                     group.submitted + kSourcesPerSession) >=
                   b - kWindow;
          };
          while (!stop.load() &&
                 !group.mu.AwaitWithTimeout(absl::Condition(&slowest_allows),
                                            absl::Milliseconds(100))) {
          }
        }
        if (stop.load()) break;
        client::Batch batch = make_batch(i, b);
        const absl::Time t0 = absl::Now();
        {
          absl::MutexLock lock(&trackers[i].mu);
          trackers[i].outstanding.push_back(t0);
        }
        absl::Status submitted = streamers[i]->Submit(std::move(batch));
        submit_block_ms[i].push_back(
            static_cast<float>(absl::ToDoubleMilliseconds(absl::Now() - t0)));
        if (!submitted.ok()) {
          submit_errors[i] = submitted;
          break;
        }
        ++sent[i];
        absl::MutexLock lock(&group.mu);
        group.submitted[k] = b + 1;
      }
    });
  }

  absl::SleepFor(duration);
  stop.store(true);
  for (std::thread& t : threads) t.join();
  const absl::Time stopped = absl::Now();

  // Deliver what is queued; every streamer must end with nothing failed.
  std::vector<std::thread> closers;
  std::vector<absl::StatusOr<std::vector<client::BatchError>>> closed(
      kStreamers, std::vector<client::BatchError>{});
  for (int i = 0; i < kStreamers; ++i) {
    closers.emplace_back([&, i] {
      closed[i] = streamers[i]->Close(absl::Now() + absl::Seconds(60));
      streaming.fetch_sub(1);
    });
  }
  for (std::thread& t : closers) t.join();
  const absl::Duration drain = absl::Now() - stopped;
  sampler.join();
  rss_thread.join();

  int64_t total = 0;
  std::vector<float> latencies, steady, blocked;
  for (int i = 0; i < kStreamers; ++i) {
    SCOPED_TRACE(absl::StrCat("streamer ", i));
    EXPECT_TRUE(submit_errors[i].ok()) << submit_errors[i];
    ASSERT_TRUE(closed[i].ok()) << closed[i].status();
    for (const client::BatchError& e : *closed[i]) {
      ADD_FAILURE() << "batch '" << e.batch_id
                    << "' failed: " << absl::StatusCodeToString(e.code) << " "
                    << e.message;
    }
    const client::StreamerStats st = streamers[i]->stats();
    EXPECT_EQ(st.submitted, sent[i]);
    EXPECT_EQ(st.acked, sent[i]);
    EXPECT_EQ(st.rejected, 0);
    EXPECT_EQ(st.dropped, 0);
    EXPECT_EQ(st.duplicates, 0);
    EXPECT_EQ(st.reconnects, 0);
    EXPECT_EQ(st.resent, 0);
    EXPECT_GT(sent[i], 0) << "a streamer sent nothing";
    {
      absl::MutexLock lock(&trackers[i].mu);
      EXPECT_EQ(trackers[i].completed, sent[i]);
      EXPECT_TRUE(trackers[i].outstanding.empty());
    }
    total += sent[i];
    latencies.insert(latencies.end(), trackers[i].latency_ms.begin(),
                     trackers[i].latency_ms.end());
    steady.insert(steady.end(), trackers[i].steady_latency_ms.begin(),
                  trackers[i].steady_latency_ms.end());
    blocked.insert(blocked.end(), submit_block_ms[i].begin(),
                   submit_block_ms[i].end());
  }

  // Every entry counts exactly the batches both of its streams sent: stream
  // (k, l) sent batches e0/0 .. e0/(sent[k] - 1), so two sources have
  // min(sent) in common, and two layers of one source all of their source's.
  for (int s = 0; s < kSessions; ++s) {
    SCOPED_TRACE(absl::StrCat("session load-", s));
    const std::string id = absl::StrCat("load-", s);
    v1::GetSimilarityRequest query;
    query.set_session_id(id);
    absl::StatusOr<v1::SimilarityMatrix> m = (*admin)->GetSimilarity(query);
    ASSERT_TRUE(m.ok()) << m.status();
    constexpr int kStreams = kSourcesPerSession * kLayers;
    ASSERT_EQ(m->rows_size(), kStreams);
    ASSERT_EQ(m->cols_size(), kStreams);
    ASSERT_EQ(m->values_size(), kStreams * kStreams);
    ASSERT_EQ(m->batches_size(), kStreams * kStreams);
    int64_t session_total = 0;
    for (int k = 0; k < kSourcesPerSession; ++k) {
      session_total += sent[s * kSourcesPerSession + k];
    }
    for (int r = 0; r < kStreams; ++r) {
      // Declared streams come first, in declaration order: source-major.
      ASSERT_EQ(m->rows(r), StreamName(s, r / kLayers, r % kLayers));
      for (int c = 0; c < kStreams; ++c) {
        const int64_t sent_r = sent[s * kSourcesPerSession + r / kLayers];
        const int64_t sent_c = sent[s * kSourcesPerSession + c / kLayers];
        const int cell = r * kStreams + c;
        ASSERT_EQ(m->batches(cell), std::min(sent_r, sent_c))
            << m->rows(r) << " × " << m->cols(c);
        EXPECT_TRUE(std::isfinite(m->values(cell)))
            << m->rows(r) << " × " << m->cols(c);
      }
      // CKA(x, x) = 1: numerator and self terms are the same sums, so only
      // the last rounding of the division can differ.
      EXPECT_NEAR(m->values(r * kStreams + r), 1.0, 1e-12) << m->rows(r);
    }
    absl::StatusOr<v1::Session> info = (*admin)->GetSession(id);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->batches_applied(), session_total);
    EXPECT_EQ(info->batches_evicted(), 0);
  }

  // RSS after the warm-up.
  const double warm = absl::ToDoubleSeconds(warmup);
  double base_mb = -1, peak_mb = -1;
  std::string samples;
  for (const RssSample& r : rss) {
    if (r.t <= warm) base_mb = r.mb;
    if (r.t >= warm) peak_mb = std::max(peak_mb, r.mb);
    absl::StrAppendFormat(&samples, " %.0f:%.0f", r.t, r.mb);
  }
  ASSERT_GT(base_mb, 0) << "no RSS sample";
  const double growth = peak_mb - base_mb;

  const double mb_per_batch =
      kLayers * kRows * kFeatures * sizeof(float) / (1024.0 * 1024.0);
  std::printf(
      "load: %d streamers, %d sessions, batches of %d layers × %d × %d "
      "float32 (%.2f MiB), offered %s\n"
      "load: %.1f s streaming + %.2f s drain: %lld batches acked, %.0f "
      "batches/s, %.0f MiB/s\n"
      "load: ack latency (Submit call → ack) ms: p50 %.2f  p90 %.2f  p99 %.2f"
      "  max %.2f  (%zu samples)\n"
      "load: the same after the warm-up ms: p50 %.2f  p90 %.2f  p99 %.2f"
      "  max %.2f  (%zu samples)\n"
      "load: Submit blocked (queue full) ms: p50 %.3f  p99 %.2f\n"
      "load: RSS MiB after %.0f s warm-up %.0f, peak after %.0f, growth %.0f "
      "(bound %.0f)\n"
      "load: RSS samples (s:MiB):%s\n",
      kStreamers, kSessions, kLayers, kRows, kFeatures, mb_per_batch,
      rate > 0 ? absl::StrFormat("%g batches/s per streamer (%g in all)", rate,
                                 rate * kStreamers)
                     .c_str()
               : "as fast as acked",
      absl::ToDoubleSeconds(stopped - start), absl::ToDoubleSeconds(drain),
      static_cast<long long>(total),
      total / absl::ToDoubleSeconds(stopped - start),
      total * mb_per_batch / absl::ToDoubleSeconds(stopped - start),
      Percentile(latencies, 0.50), Percentile(latencies, 0.90),
      Percentile(latencies, 0.99), Percentile(latencies, 1.0), latencies.size(),
      Percentile(steady, 0.50), Percentile(steady, 0.90),
      Percentile(steady, 0.99), Percentile(steady, 1.0), steady.size(),
      Percentile(blocked, 0.50), Percentile(blocked, 0.99), warm, base_mb,
      peak_mb, growth, kMaxRssGrowthMb, samples.c_str());
  EXPECT_EQ(static_cast<int64_t>(latencies.size()), total);
  EXPECT_LT(growth, kMaxRssGrowthMb) << "RSS samples (s:MiB):" << samples;

  streamers.clear();
  clients.clear();
  if (durable) {
    // Every ack waited for its commit: a restart from the data dir answers
    // what ckad answered before it stopped.
    std::vector<std::string> before;
    for (int s = 0; s < kSessions; ++s) {
      before.push_back(Answers(**admin, absl::StrCat("load-", s)));
    }
    admin->reset();
    server->Shutdown();
    server.reset();
    const absl::Time restart = absl::Now();
    started = server::Server::BuildAndStart(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server = *std::move(started);
    std::printf("load: restart from the data dir in %.2f s\n",
                absl::ToDoubleSeconds(absl::Now() - restart));
    client_options.server = absl::StrCat("127.0.0.1:", server->port());
    admin = client::Client::Create(client_options);
    ASSERT_TRUE(admin.ok()) << admin.status();
    for (int s = 0; s < kSessions; ++s) {
      EXPECT_EQ(Answers(**admin, absl::StrCat("load-", s)), before[s])
          << "session load-" << s << " changed across the restart";
    }
    // The first batch of streamer 0, acked before the restart, is acked
    // again as a duplicate that changes nothing.
    client::StreamerOptions so;
    so.session_id = "load-0";
    so.source = "job0-0";
    absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> resender =
        client::ActivationStreamer::Create(**admin, so);
    ASSERT_TRUE(resender.ok()) << resender.status();
    EXPECT_TRUE((*resender)->Submit(make_batch(0, 0)).ok());
    absl::StatusOr<std::vector<client::BatchError>> resent =
        (*resender)->Close(absl::Now() + absl::Seconds(60));
    ASSERT_TRUE(resent.ok()) << resent.status();
    EXPECT_TRUE(resent->empty());
    EXPECT_EQ((*resender)->stats().acked, 1);
    EXPECT_EQ((*resender)->stats().duplicates, 1);
    EXPECT_EQ(Answers(**admin, "load-0"), before[0]);
  }
  admin->reset();
  server->Shutdown();
  if (durable && !HasFailure()) std::filesystem::remove_all(options.data_dir);
}

INSTANTIATE_TEST_SUITE_P(Storage, LoadTest,
                         ::testing::Values(Storage::kMemory, Storage::kDataDir),
                         [](const ::testing::TestParamInfo<Storage>& info) {
                           return std::string(info.param == Storage::kMemory
                                                  ? "memory"
                                                  : "data_dir");
                         });

}  // namespace
}  // namespace cka::testing
