// The hot path of cka::core against the compute ceiling of the BLAS it links.
//
// For each workload (S streams × n examples × d features, float32 activations)
// it times Session::Ingest of whole batches — Gram (ssyrk), U-centring, one
// GEMM for all pairs, the commit — and reports GFLOP/s next to plain sgemm
// GFLOP/s measured in the same run.
//
//   cka_core_bench [--quick] [--json FILE]
//
// --quick runs reduced sizes once (for CI: it checks that the benchmark works,
// not timings).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "cka/core/hsic.h"
#include "cka/core/session.h"
#include "cka/core/thread_pool.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Best-of-`reps` GFLOP/s of a size³ sgemm.
double SgemmGflops(int size, int reps) {
  std::vector<float> a(size * size), b(size * size), c(size * size);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (float& v : a) v = u(rng);
  for (float& v : b) v = u(rng);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size,
                1.0f, a.data(), size, b.data(), size, 0.0f, c.data(), size);
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  return 2.0 * size * size * static_cast<double>(size) / best / 1e9;
}

struct Workload {
  const char* name;
  int streams, n, d;
};

// How the layers of a batch share the cores.
enum class Mode {
  kBlasThreads,  // layers one after another, each BLAS call on every core
  kLayerPool,    // layers in parallel on a pool of one thread per core, BLAS
                 // single-threaded
};

const char* ModeName(Mode m) {
  return m == Mode::kBlasThreads ? "blas-threads" : "layer-pool";
}

struct Result {
  Workload w;
  Mode mode;
  double seconds_per_batch = 0;
  double gflops = 0;
};

// Realistic activations: ReLU of Gaussian noise (non-negative, many zeros).
std::vector<float> Activations(int n, int d, unsigned seed) {
  std::vector<float> x(static_cast<size_t>(n) * d);
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  for (float& v : x) v = std::max(0.0f, g(rng));
  return x;
}

Result RunWorkload(const Workload& w, Mode mode, int batches) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  cka::core::SetBlasThreads(mode == Mode::kBlasThreads ? cores : 1);
  std::unique_ptr<cka::core::ThreadPool> pool;
  if (mode == Mode::kLayerPool)
    pool = std::make_unique<cka::core::ThreadPool>(cores);
  std::vector<std::vector<float>> data;
  for (int s = 0; s < w.streams; ++s)
    data.push_back(Activations(w.n, w.d, 100 + s));
  auto session = cka::core::Session::Create({});
  if (!session.ok()) std::abort();
  cka::core::BatchInput batch;
  for (int s = 0; s < w.streams; ++s) {
    cka::core::LayerInput layer;
    layer.layer = absl::StrFormat("layer%02d", s);
    layer.tensor.shape = {w.n, w.d};
    layer.tensor.dtype = cka::core::DType::kFloat32;
    layer.tensor.data = data[s].data();
    layer.tensor.size_bytes = data[s].size() * sizeof(float);
    batch.layers.push_back(layer);
  }
  auto ingest = [&](int i) {
    batch.batch_id = absl::StrFormat("b%d", i);
    if (!(*session)->Ingest(batch, pool.get()).ok()) std::abort();
  };
  ingest(-1);  // warm-up: allocations, BLAS thread start
  auto t0 = Clock::now();
  for (int i = 0; i < batches; ++i) ingest(i);
  const double per_batch = Seconds(t0, Clock::now()) / batches;
  // Useful floating-point work: a symmetric rank-d update per stream, and all
  // pairs once.
  const double n = w.n, s = w.streams;
  const double flops = s * n * (n + 1) * w.d + s * (s + 1) * n * n;
  return {w, mode, per_batch, flops / per_batch / 1e9};
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  cka::core::SetBlasThreads(
      static_cast<int>(std::thread::hardware_concurrency()));
  const double sgemm = quick ? SgemmGflops(512, 1) : SgemmGflops(2048, 3);
  std::vector<Workload> workloads =
      quick ? std::vector<Workload>{{"W1-quick", 4, 64, 256}}
            : std::vector<Workload>{{"W1", 16, 256, 2048},
                                    {"W2", 64, 128, 512},
                                    {"W3", 8, 512, 16384}};
  std::printf("cka core benchmark — BLAS: %s, OPENBLAS_CORETYPE=%s\n",
              openblas_get_config(), coretype ? coretype : "(unset)");
  std::printf("sgemm %d^3: %.1f GFLOP/s (baseline)\n\n", quick ? 512 : 2048,
              sgemm);
  std::printf("%-9s %-13s %8s %6s %7s %12s %10s %8s\n", "workload", "mode",
              "streams", "n", "d", "ms/batch", "GFLOP/s", "ratio");
  std::vector<Result> results;
  for (const Workload& w : workloads) {
    const double flops = 1.0 * w.streams * w.n * w.n * w.d;
    const int batches = quick ? 2 : std::max(3, static_cast<int>(8e9 / flops));
    for (Mode mode : {Mode::kBlasThreads, Mode::kLayerPool}) {
      Result r = RunWorkload(w, mode, batches);
      std::printf("%-9s %-13s %8d %6d %7d %12.2f %10.1f %8.2f\n", w.name,
                  ModeName(mode), w.streams, w.n, w.d,
                  r.seconds_per_batch * 1e3, r.gflops, r.gflops / sgemm);
      results.push_back(r);
    }
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\"sgemm_gflops\": " << sgemm << ", \"openblas_coretype\": \""
        << (coretype ? coretype : "") << "\", \"workloads\": [";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      out << (i ? ", " : "") << "{\"name\": \"" << r.w.name
          << "\", \"streams\": " << r.w.streams << ", \"n\": " << r.w.n
          << ", \"d\": " << r.w.d
          << ", \"seconds_per_batch\": " << r.seconds_per_batch
          << ", \"gflops\": " << r.gflops
          << ", \"ratio_to_sgemm\": " << r.gflops / sgemm << "}";
    }
    out << "]}\n";
  }
  return 0;
}
