// Query cost of the comparison family (core/MATH.md, "Comparison family from
// second moments") against the eigendecomposition it is made of.
//
// For each width p it declares two streams x and y of width p, ingests N = 2p
// rows (float64; y a noisy nonlinear function of x), then times
// Session::Query of the one entry (x, y) for every moment kind, next to two
// baselines measured in the same run on one p × p symmetric matrix (the
// centred moment of x): Eigen's SelfAdjointEigenSolver (what the measures used
// before) and LAPACK's dsyevd through core's wrapper (what they use now,
// core/src/measures/lapack.h). Each query decomposes both streams' moments and
// takes one SVD, so its ratio to the dsyevd baseline is the number of p × p
// eigendecompositions' worth of work it does (about 2–4), and the ratio of
// the two baselines is what LAPACK gained. Before each timed query a batch of
// 4 more rows completes, so the query computes its spectra ("query"); the
// same query again right after it is "repeat", which costs the same unless
// the session keeps spectra between queries. Up to p = 512 it also times CCA
// R²'s whole 2 × 2 matrix in one query, where each stream is decomposed once,
// against its four entries asked one by one.
//
//   cka_moment_bench [--quick] [--max-width P] [--blas-threads T] [--json FILE]
//
// --quick runs p = 32 and 64 once (CI: it checks that the benchmark works,
// not timings). --blas-threads sets OpenBLAS's threads for this process
// (ckad sets 1 when its batch pool has more than one thread); 0 leaves
// OpenBLAS's default. Figures are medians of the repetitions (1 at p >= 1024).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "Eigen/Dense"
#include "absl/strings/str_format.h"
#include "cka/core/allocator.h"
#include "cka/core/config.h"
#include "cka/core/hsic.h"
#include "cka/core/session.h"
#include "measures/lapack.h"
#include "nlohmann/json.hpp"
#include "timing.h"

namespace {

using cka::bench::Clock;
using cka::bench::Median;
using cka::bench::Seconds;
using RowMajor =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Kind {
  cka::core::MeasureKind kind;
  const char* name;
};
constexpr Kind kKinds[] = {
    {cka::core::MeasureKind::kCcaR2, "cca_r2"},
    {cka::core::MeasureKind::kCcaMeanRho, "cca_mean_rho"},
    {cka::core::MeasureKind::kSvcca, "svcca"},
    {cka::core::MeasureKind::kPwcca, "pwcca"},
    {cka::core::MeasureKind::kRegressionR2, "regression_r2"},
    {cka::core::MeasureKind::kProcrustes, "procrustes"},
};

// Draws rows of x (standard normal, p wide) and y = tanh(x·w) + 0.5·noise
// with one fixed p × p map w, and ingests each draw into the session as a
// batch of its own.
class Streams {
 public:
  Streams(int p, cka::core::Session* session)
      : p_(p), session_(session), rng_(p), w_(p, p) {
    for (int i = 0; i < w_.size(); ++i) {
      w_.data()[i] = normal_(rng_) / std::sqrt(p);
    }
  }

  // Ingests n new rows; returns their x (n × p).
  absl::StatusOr<RowMajor> Ingest(int n) {
    RowMajor x(n, p_);
    for (int i = 0; i < x.size(); ++i) x.data()[i] = normal_(rng_);
    RowMajor y = (x * w_).array().tanh().matrix();
    for (int i = 0; i < y.size(); ++i) y.data()[i] += 0.5 * normal_(rng_);
    cka::core::BatchInput batch{"", "b" + std::to_string(batches_++), 0, {}};
    for (const auto& [name, m] :
         {std::pair<const char*, const RowMajor*>{"x", &x}, {"y", &y}}) {
      batch.layers.push_back({name,
                              cka::core::LayerInput::Kind::kActivations,
                              {{n, p_},
                               cka::core::DType::kFloat64,
                               m->data(),
                               static_cast<size_t>(m->size()) * 8}});
    }
    if (auto r = session_->Ingest(batch); !r.ok()) return r.status();
    return x;
  }

 private:
  const int p_;
  cka::core::Session* session_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_;
  Eigen::MatrixXd w_;
  int batches_ = 0;
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "cka_moment_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cka moment measures: query cost against one eigendecomposition"};
  bool quick = false;
  int max_width = 2048;
  int blas_threads = 0;
  std::string json_path;
  app.add_flag("--quick", quick, "p = 32 and 64, one repetition (CI)");
  app.add_option("--max-width", max_width, "largest p (default 2048)");
  app.add_option("--blas-threads", blas_threads,
                 "OpenBLAS threads for this run (0: OpenBLAS's default)");
  app.add_option("--json", json_path, "also write the figures to this file");
  CLI11_PARSE(app, argc, argv);
  if (blas_threads > 0) cka::core::SetBlasThreads(blas_threads);
  cka::core::KeepFreedMemoryForReuse();  // as ckad does

  std::vector<int> widths;
  for (int p = quick ? 32 : 64; p <= (quick ? 64 : max_width); p *= 2)
    widths.push_back(p);
  std::printf(
      "cka moment measures — query of one entry (x, y), N = 2p rows, OpenBLAS "
      "threads %d; baselines of the same run on one p × p matrix: Eigen "
      "SelfAdjointEigenSolver (eigen) and LAPACK dsyevd (lapack); query: after "
      "a new batch, repeat: the same query again\n\n",
      cka::core::BlasThreads());
  std::printf("%6s %-14s %10s %10s %10s %10s %9s %9s\n", "p", "kind", "query s",
              "repeat s", "eigen s", "lapack s", "÷ lapack", "÷ eigen");
  nlohmann::json out = nlohmann::json::array();
  for (int p : widths) {
    const int n = 2 * p;
    const int reps = quick ? 1 : (p >= 1024 ? 1 : 3);
    cka::core::SessionConfig config;
    for (const Kind& k : kKinds) {
      cka::core::Measure m;
      m.name = k.name;
      m.estimator = cka::core::Estimator::kExact;
      m.kind = k.kind;
      config.measures.push_back(m);
    }
    config.streams = {"x", "y"};
    auto session = cka::core::Session::Create(config);
    if (!session.ok()) return Fail(session.status());
    Streams streams(p, session->get());
    absl::StatusOr<RowMajor> x = streams.Ingest(n);
    if (!x.ok()) return Fail(x.status());

    const Eigen::MatrixXd centred = x->rowwise() - x->colwise().mean();
    const Eigen::MatrixXd cxx = centred.transpose() * centred;
    std::vector<double> eigen_times, lapack_times;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cxx);
      eigen_times.push_back(Seconds(t0, Clock::now()));
      if (eig.info() != Eigen::Success) return 1;
      Eigen::MatrixXd a = cxx;
      Eigen::VectorXd values;
      t0 = Clock::now();
      const absl::Status s =
          cka::core::measures_internal::SymmetricEigen(&a, &values);
      lapack_times.push_back(Seconds(t0, Clock::now()));
      if (!s.ok()) return Fail(s);
    }
    const double eigen_s = Median(eigen_times);
    const double lapack_s = Median(lapack_times);
    nlohmann::json entry = {{"p", p},
                            {"rows", n},
                            {"blas_threads", cka::core::BlasThreads()},
                            {"eig_seconds", eigen_s},
                            {"lapack_eig_seconds", lapack_s}};
    // One line of the table; `repeat` < 0: not measured.
    auto row = [&](const char* name, double s, double repeat) {
      const std::string again =
          repeat < 0 ? "-" : absl::StrFormat("%.4f", repeat);
      std::printf("%6d %-14s %10.4f %10s %10.4f %10.4f %9.2f %9.2f\n", p, name,
                  s, again.c_str(), eigen_s, lapack_s, s / lapack_s,
                  s / eigen_s);
    };
    for (const Kind& k : kKinds) {
      cka::core::SimilarityQuery q;
      q.measure = k.name;
      q.rows = {"x"};
      q.cols = {"y"};
      std::vector<double> times, repeats;
      double value = 0;
      for (int r = 0; r < reps; ++r) {
        if (absl::StatusOr<RowMajor> more = streams.Ingest(4); !more.ok()) {
          return Fail(more.status());
        }
        for (std::vector<double>* into : {&times, &repeats}) {
          const auto t0 = Clock::now();
          auto m = (*session)->Query(q);
          into->push_back(Seconds(t0, Clock::now()));
          if (!m.ok()) return Fail(m.status());
          value = m->values[0];
        }
      }
      const double s = Median(times), repeat = Median(repeats);
      row(k.name, s, repeat);
      entry["kinds"][k.name] = {
          {"seconds", s}, {"repeat_seconds", repeat}, {"value", value}};
    }
    if (p <= 512) {
      // The 2 × 2 matrix in one query (each stream decomposed once) against
      // its four entries asked one by one (each query decomposes its own
      // streams, 1 + 2 + 2 + 1, unless the session keeps them), each after
      // a new batch.
      auto seconds_of =
          [&](const std::vector<std::pair<std::string, std::string>>& queries) {
            std::vector<double> times;
            for (int r = 0; r < reps; ++r) {
              if (!streams.Ingest(4).ok()) return -1.0;
              const auto t0 = Clock::now();
              for (const auto& [row, col] : queries) {
                cka::core::SimilarityQuery q;
                q.measure = "cca_r2";
                if (!row.empty()) q.rows = {row}, q.cols = {col};
                if (!(*session)->Query(q).ok()) return -1.0;
              }
              times.push_back(Seconds(t0, Clock::now()));
            }
            return Median(times);
          };
      const double matrix = seconds_of({{"", ""}});
      const double entries =
          seconds_of({{"x", "x"}, {"x", "y"}, {"y", "x"}, {"y", "y"}});
      if (matrix < 0 || entries < 0) return 1;
      row("cca 2x2 matrix", matrix, -1);
      row("cca 4 entries", entries, -1);
      entry["cca_r2_matrix_2x2"] = {{"seconds", matrix},
                                    {"entries_one_by_one_seconds", entries}};
    }
    std::fflush(stdout);
    out.push_back(entry);
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << nlohmann::json{{"moment_queries", out}}.dump(1) << "\n";
  }
  return 0;
}
