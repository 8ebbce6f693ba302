// Query cost of the comparison family (core/MATH.md, "Comparison family from
// second moments") against the eigendecomposition it is made of.
//
// For each width p it declares two streams x and y of width p, ingests N = 2p
// rows once (float64; y a noisy nonlinear function of x), then times
// Session::Query of the one entry (x, y) for every moment kind, next to the
// baseline measured in the same run: Eigen's SelfAdjointEigenSolver of one
// p × p symmetric matrix (the centred moment of x). Each query decomposes both
// streams' moments and takes one SVD, so its ratio to the baseline is the
// number of p × p eigendecompositions' worth of work it does (about 2–4).
// Up to p = 512 it also times CCA R²'s whole 2 × 2 matrix in one query, where
// each stream is decomposed once, against its four entries asked one by one.
// Above p = 512 only CCA R² is timed (the others cost the same
// decompositions; each takes seconds there). Nothing is cached between
// queries: every query pays its decompositions.
//
//   cka_moment_bench [--quick] [--max-width P] [--json FILE]
//
// --quick runs p = 32 and 64 once (CI: it checks that the benchmark works,
// not timings). Figures are medians of the repetitions (1 at p >= 1024).
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
#include "cka/core/config.h"
#include "cka/core/session.h"
#include "nlohmann/json.hpp"
#include "timing.h"

namespace {

using cka::bench::Clock;
using cka::bench::Median;
using cka::bench::Seconds;

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cka moment measures: query cost against one eigendecomposition"};
  bool quick = false;
  int max_width = 2048;
  std::string json_path;
  app.add_flag("--quick", quick, "p = 32 and 64, one repetition (CI)");
  app.add_option("--max-width", max_width, "largest p (default 2048)");
  app.add_option("--json", json_path, "also write the figures to this file");
  CLI11_PARSE(app, argc, argv);

  std::vector<int> widths;
  for (int p = quick ? 32 : 64; p <= (quick ? 64 : max_width); p *= 2)
    widths.push_back(p);
  std::printf(
      "cka moment measures — query of one entry (x, y), N = 2p rows; baseline: "
      "Eigen SelfAdjointEigenSolver of one p × p matrix, same run\n\n");
  std::printf("%6s %-14s %12s %12s %8s\n", "p", "kind", "query s", "eig s",
              "ratio");
  nlohmann::json out = nlohmann::json::array();
  for (int p : widths) {
    const int n = 2 * p;
    const int reps = quick ? 1 : (p >= 1024 ? 1 : 3);
    std::mt19937_64 rng(p);
    std::normal_distribution<double> normal;
    Eigen::MatrixXd x(n, p), w(p, p);
    for (int i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
    for (int i = 0; i < w.size(); ++i) w.data()[i] = normal(rng) / std::sqrt(p);
    Eigen::MatrixXd y = (x * w).array().tanh().matrix();
    for (int i = 0; i < y.size(); ++i) y.data()[i] += 0.5 * normal(rng);

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
    if (!session.ok()) {
      std::fprintf(stderr, "cka_moment_bench: %s\n",
                   session.status().ToString().c_str());
      return 1;
    }
    // Row-major n × p, as a batch carries it.
    const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>
        xr = x,
        yr = y;
    cka::core::BatchInput batch{"", "b0", 0, {}};
    batch.layers.push_back({"x",
                            cka::core::LayerInput::Kind::kActivations,
                            {{n, p},
                             cka::core::DType::kFloat64,
                             xr.data(),
                             static_cast<size_t>(xr.size()) * 8}});
    batch.layers.push_back({"y",
                            cka::core::LayerInput::Kind::kActivations,
                            {{n, p},
                             cka::core::DType::kFloat64,
                             yr.data(),
                             static_cast<size_t>(yr.size()) * 8}});
    if (auto r = (*session)->Ingest(batch); !r.ok()) {
      std::fprintf(stderr, "cka_moment_bench: %s\n",
                   r.status().ToString().c_str());
      return 1;
    }

    const Eigen::MatrixXd centred = x.rowwise() - x.colwise().mean();
    const Eigen::MatrixXd cxx = centred.transpose() * centred;
    std::vector<double> eig_times;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = Clock::now();
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cxx);
      eig_times.push_back(Seconds(t0, Clock::now()));
      if (eig.info() != Eigen::Success) return 1;
    }
    const double eig_s = Median(eig_times);
    nlohmann::json entry = {{"p", p}, {"rows", n}, {"eig_seconds", eig_s}};
    for (const Kind& k : kKinds) {
      // Above 512 the eigendecompositions take seconds each: CCA R² stands
      // for the family (the other kinds cost the same decompositions).
      if (p > 512 && k.kind != cka::core::MeasureKind::kCcaR2) continue;
      cka::core::SimilarityQuery q;
      q.measure = k.name;
      q.rows = {"x"};
      q.cols = {"y"};
      std::vector<double> times;
      double value = 0;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = Clock::now();
        auto m = (*session)->Query(q);
        times.push_back(Seconds(t0, Clock::now()));
        if (!m.ok()) {
          std::fprintf(stderr, "cka_moment_bench: %s\n",
                       m.status().ToString().c_str());
          return 1;
        }
        value = m->values[0];
      }
      const double s = Median(times);
      std::printf("%6d %-14s %12.4f %12.4f %8.2f\n", p, k.name, s, eig_s,
                  s / eig_s);
      entry["kinds"][k.name] = {{"seconds", s}, {"value", value}};
    }
    if (p <= 512) {
      // The 2 × 2 matrix in one query (each stream decomposed once) against
      // its four entries asked one by one (each query decomposes its own
      // streams: 1 + 2 + 2 + 1).
      auto seconds_of =
          [&](const std::vector<std::pair<std::string, std::string>>& queries) {
            std::vector<double> times;
            for (int r = 0; r < reps; ++r) {
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
      std::printf("%6d %-14s %12.4f %12.4f %8.2f\n", p, "cca 2x2 matrix",
                  matrix, eig_s, matrix / eig_s);
      std::printf("%6d %-14s %12.4f %12.4f %8.2f\n", p, "cca 4 entries",
                  entries, eig_s, entries / eig_s);
      entry["cca_r2_matrix_2x2"] = {{"seconds", matrix},
                                    {"entries_one_by_one_seconds", entries}};
    }
    out.push_back(entry);
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << nlohmann::json{{"moment_queries", out}}.dump(1) << "\n";
  }
  return 0;
}
