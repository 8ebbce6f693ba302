// The hot path of cka::core against the compute ceiling of the BLAS it links.
//
// For each workload (S streams × n examples × d features, float32 activations)
// it times Session::Ingest of whole batches — Gram (ssyrk), U-centring, one
// syrk for all pairs, the commit — and reports GFLOP/s next to plain sgemm
// GFLOP/s measured in the same run.
//
//   cka_core_bench [--data DIR] [--only NAME] [--quick] [--sgemm-only]
//                  [--json FILE]
//
// DIR holds the batches of bench/make_batches.py (workloads.json and
// <name>/s<i>.npy), so that numpy and ckad see the same numbers; without it the
// workloads W1–W3 are generated here. --quick runs reduced sizes (for CI: it
// checks that the benchmark works, not timings).
//
// Figures are medians: of five sgemm runs, and of the per-batch times. On a
// shared machine a median is steadier than a mean; both sides of every ratio
// use it.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "cka/core/allocator.h"
#include "cka/core/hsic.h"
#include "cka/core/session.h"
#include "cka/core/thread_pool.h"
#include "nlohmann/json.hpp"
#include "npy_reader.h"
#include "timing.h"

namespace {

using cka::bench::Clock;
using cka::bench::Median;
using cka::bench::Seconds;

// Median-of-`reps` GFLOP/s of a size³ sgemm on every core.
double SgemmGflops(int size, int reps) {
  cka::core::SetBlasThreads(
      static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<float> a(size * size), b(size * size), c(size * size);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (float& v : a) v = u(rng);
  for (float& v : b) v = u(rng);
  std::vector<double> times;
  for (int r = 0; r <= reps; ++r) {  // the first run warms up
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size,
                1.0f, a.data(), size, b.data(), size, 0.0f, c.data(), size);
    if (r > 0) times.push_back(Seconds(t0, Clock::now()));
  }
  return 2.0 * size * size * static_cast<double>(size) / Median(times) / 1e9;
}

struct Workload {
  std::string name;
  int streams = 0, n = 0, d = 0;
  std::vector<std::vector<float>> layers;  // per stream, n × d
};

// Realistic activations: ReLU of Gaussian noise (non-negative, many zeros).
std::vector<float> Activations(int n, int d, unsigned seed) {
  std::vector<float> x(static_cast<size_t>(n) * d);
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  for (float& v : x) v = std::max(0.0f, g(rng));
  return x;
}

Workload Generated(std::string name, int streams, int n, int d) {
  Workload w{std::move(name), streams, n, d, {}};
  for (int s = 0; s < streams; ++s)
    w.layers.push_back(Activations(n, d, 100 + s));
  return w;
}

// The workloads of bench/make_batches.py in `dir`.
absl::StatusOr<std::vector<Workload>> LoadWorkloads(const std::string& dir) {
  std::ifstream in(dir + "/workloads.json");
  if (!in) return absl::NotFoundError(dir + "/workloads.json: cannot open");
  const nlohmann::json list = nlohmann::json::parse(in, nullptr, false);
  if (!list.is_array()) {
    return absl::InvalidArgumentError(dir + "/workloads.json: not a JSON list");
  }
  std::vector<Workload> out;
  for (const nlohmann::json& j : list) {
    Workload w{j.value("name", ""),
               j.value("streams", 0),
               j.value("n", 0),
               j.value("d", 0),
               {}};
    for (int s = 0; s < w.streams; ++s) {
      const std::string path = absl::StrFormat("%s/%s/s%d.npy", dir, w.name, s);
      absl::StatusOr<cka::client::NpyArray> a = cka::client::ReadNpyFile(path);
      if (!a.ok()) return a.status();
      if (a->dtype != cka::client::NpyArray::DType::kFloat32 ||
          a->shape != std::vector<int64_t>{w.n, w.d}) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: want float32 of shape (%d, %d)", path, w.n, w.d));
      }
      std::vector<float> x(static_cast<size_t>(w.n) * w.d);
      std::memcpy(x.data(), a->data.data(), a->data.size());
      w.layers.push_back(std::move(x));
    }
    out.push_back(std::move(w));
  }
  return out;
}

// How the layers of a batch share the cores.
enum class Mode {
  kBlasThreads,  // layers one after another, each BLAS call on every core
  kLayerPool,    // layers in parallel on a pool of one thread per core, BLAS
                 // single-threaded (what ckad does)
};

const char* ModeName(Mode m) {
  return m == Mode::kBlasThreads ? "blas-threads" : "layer-pool";
}

struct Result {
  std::string name;
  int streams, n, d;
  Mode mode;
  int batches;
  double median_seconds, best_seconds;  // per batch
  double cpu_seconds;       // per batch, all threads of this process
  std::string gram_kernel;  // the float32 Gram's, in this mode
};

// Useful floating-point work per batch: a symmetric rank-d update per stream,
// and all pairs once.
double Flops(const Result& r) {
  const double n = r.n, s = r.streams;
  return s * n * (n + 1) * r.d + s * (s + 1) * n * n;
}

Result RunWorkload(const Workload& w, Mode mode, int batches) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  cka::core::SetBlasThreads(mode == Mode::kBlasThreads ? cores : 1);
  std::unique_ptr<cka::core::ThreadPool> pool;
  if (mode == Mode::kLayerPool)
    pool = std::make_unique<cka::core::ThreadPool>(cores);
  auto session = cka::core::Session::Create({});
  if (!session.ok()) std::abort();
  cka::core::BatchInput batch;
  for (int s = 0; s < w.streams; ++s) {
    cka::core::LayerInput layer;
    layer.layer = absl::StrFormat("layer%02d", s);
    layer.tensor.shape = {w.n, w.d};
    layer.tensor.dtype = cka::core::DType::kFloat32;
    layer.tensor.data = w.layers[s].data();
    layer.tensor.size_bytes = w.layers[s].size() * sizeof(float);
    batch.layers.push_back(layer);
  }
  auto ingest = [&](int i) {
    batch.batch_id = absl::StrFormat("b%d", i);
    absl::StatusOr<cka::core::IngestResult> r =
        (*session)->Ingest(batch, pool.get());
    if (!r.ok()) {
      std::fprintf(stderr, "%s: %s\n", w.name.c_str(),
                   r.status().ToString().c_str());
      std::exit(1);
    }
  };
  // In layer-pool mode the batch is ingested on a pool worker, as in ckad: the
  // layers then share exactly the pool's threads, one per core.
  auto timed = [&](int i) {
    auto t0 = Clock::now();
    if (pool == nullptr) {
      ingest(i);
    } else {
      absl::Notification done;
      pool->Schedule([&] {
        ingest(i);
        done.Notify();
      });
      done.WaitForNotification();
    }
    return Seconds(t0, Clock::now());
  };
  timed(-1);  // warm-up: allocations, BLAS thread start
  std::vector<double> times;
  const std::clock_t cpu_before = std::clock();  // all threads of the process
  for (int i = 0; i < batches; ++i) times.push_back(timed(i));
  const double cpu_per_batch =
      static_cast<double>(std::clock() - cpu_before) / CLOCKS_PER_SEC / batches;
  return {w.name,        w.streams,
          w.n,           w.d,
          mode,          batches,
          Median(times), *std::min_element(times.begin(), times.end()),
          cpu_per_batch, cka::core::LinearGramKernelName()};
}

}  // namespace

int main(int argc, char** argv) {
  cka::core::ReexecWithHugePages(argv);  // as ckad does
  cka::core::KeepFreedMemoryForReuse();  // as ckad does
  CLI::App app{"cka core benchmark: Gram + centring + all pairs against sgemm"};
  bool quick = false, sgemm_only = false;
  std::string data_dir, only, json_path;
  app.add_option("--data", data_dir,
                 "batches written by bench/make_batches.py (default: "
                 "generate W1-W3 here)");
  app.add_option("--only", only, "run only the workload of this name");
  app.add_option("--json", json_path, "also write the figures to this file");
  app.add_flag("--quick", quick, "reduced sizes, one pass (CI)");
  app.add_flag("--sgemm-only", sgemm_only, "measure the sgemm baseline only");
  CLI11_PARSE(app, argc, argv);

  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const int sgemm_size = quick ? 512 : 2048;
  const double sgemm = SgemmGflops(sgemm_size, quick ? 1 : 5);
  std::printf("cka core benchmark — BLAS: %s, OPENBLAS_CORETYPE=%s\n",
              openblas_get_config(), coretype ? coretype : "(unset)");
  std::printf("sgemm %d^3 on %u cores: %.1f GFLOP/s (baseline, median of %d)\n",
              sgemm_size, std::thread::hardware_concurrency(), sgemm,
              quick ? 1 : 5);

  std::vector<Workload> workloads;
  if (sgemm_only) {
    // Only the baseline.
  } else if (!data_dir.empty()) {
    absl::StatusOr<std::vector<Workload>> loaded = LoadWorkloads(data_dir);
    if (!loaded.ok()) {
      std::fprintf(stderr, "cka_core_bench: %s\n",
                   loaded.status().ToString().c_str());
      return 1;
    }
    workloads = *std::move(loaded);
  } else {
    const std::vector<std::tuple<const char*, int, int, int>> shapes =
        quick ? std::vector<std::tuple<const char*, int, int, int>>{{"Q", 4, 64,
                                                                     256}}
              : std::vector<std::tuple<const char*, int, int, int>>{
                    {"W1", 16, 256, 2048},
                    {"W2", 64, 128, 512},
                    {"W3", 8, 512, 16384}};
    for (const auto& [name, streams, n, d] : shapes) {
      if (only.empty() || only == name)
        workloads.push_back(Generated(name, streams, n, d));
    }
  }

  std::vector<Result> results;
  if (!workloads.empty()) {
    std::printf("\n%-9s %-13s %7s %5s %6s %8s %10s %10s %8s\n", "workload",
                "mode", "streams", "n", "d", "batches", "ms/batch", "GFLOP/s",
                "ratio");
  }
  for (const Workload& w : workloads) {
    if (!only.empty() && only != w.name) continue;
    const double flops = 1.0 * w.streams * w.n * w.n * w.d;
    const int batches =
        quick ? 2 : std::max(10, static_cast<int>(4e10 / flops));
    for (Mode mode : {Mode::kLayerPool, Mode::kBlasThreads}) {
      const Result r = RunWorkload(w, mode, batches);
      const double gflops = Flops(r) / r.median_seconds / 1e9;
      std::printf("%-9s %-13s %7d %5d %6d %8d %10.2f %10.1f %8.2f  %s\n",
                  r.name.c_str(), ModeName(mode), r.streams, r.n, r.d,
                  r.batches, r.median_seconds * 1e3, gflops, gflops / sgemm,
                  r.gram_kernel.c_str());
      results.push_back(r);
      // OpenBLAS threads spin for a while after a multi-threaded call; let them
      // go to sleep so that they do not steal the next run's cores.
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }

  if (!json_path.empty()) {
    nlohmann::json out = {{"sgemm_gflops", sgemm},
                          {"sgemm_size", sgemm_size},
                          {"cores", std::thread::hardware_concurrency()},
                          {"openblas_coretype", coretype ? coretype : ""},
                          {"openblas_config", openblas_get_config()},
                          {"workloads", nlohmann::json::array()}};
    for (const Result& r : results) {
      const double gflops = Flops(r) / r.median_seconds / 1e9;
      out["workloads"].push_back({{"name", r.name},
                                  {"streams", r.streams},
                                  {"n", r.n},
                                  {"d", r.d},
                                  {"mode", ModeName(r.mode)},
                                  {"batches", r.batches},
                                  {"seconds_per_batch", r.median_seconds},
                                  {"best_seconds_per_batch", r.best_seconds},
                                  {"gflops", gflops},
                                  {"ratio_to_sgemm", gflops / sgemm},
                                  {"cpu_seconds_per_batch", r.cpu_seconds},
                                  {"gram_kernel", r.gram_kernel}});
    }
    std::ofstream(json_path) << out.dump(2) << "\n";
  }
  return 0;
}
