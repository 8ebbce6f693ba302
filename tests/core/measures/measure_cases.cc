#include "measures/measure_cases.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "test_data.h"

namespace cka::core::testing {
namespace {

std::vector<double> Doubles(const nlohmann::json& j) {
  std::vector<double> v;
  for (const auto& e : j) v.push_back(e.get<double>());
  return v;
}

std::vector<MeasureCase> ParseCases() {
  std::vector<MeasureCase> cases;
  for (const auto& j : LoadJson("measures.json").at("cases")) {
    MeasureCase c;
    c.name = j.at("name").get<std::string>();
    c.n = j.at("n").get<int64_t>();
    c.dx = j.at("dx").get<int64_t>();
    c.dy = j.at("dy").get<int64_t>();
    c.x = Doubles(j.at("x"));
    c.y = Doubles(j.at("y"));
    for (const auto& [key, value] : j.at("expected").items()) {
      c.expected[key] = value.is_null()
                            ? std::numeric_limits<double>::quiet_NaN()
                            : value.get<double>();
    }
    for (const auto& [key, value] : j.at("errors").items())
      c.errors[key] = value.get<std::string>();
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace

PairMoments MeasureCase::Moments() const { return MomentsOf(x, dx, y, dy, n); }

const std::vector<MeasureCase>& MeasureCases() {
  static const auto* cases = new std::vector<MeasureCase>(ParseCases());
  return *cases;
}

const MeasureCase& CaseNamed(const std::string& name) {
  for (const MeasureCase& c : MeasureCases()) {
    if (c.name == name) return c;
  }
  std::cerr << "no case " << name << " in measures.json\n";
  std::abort();
}

const CaseTransforms& Transforms() {
  static const auto* t = [] {
    const nlohmann::json& j = LoadJson("measures.json").at("transforms");
    auto* out = new CaseTransforms;
    out->q = Doubles(j.at("q"));
    out->a = Doubles(j.at("a"));
    out->scale = j.at("scale").get<double>();
    return out;
  }();
  return *t;
}

PairMoments MomentsOf(const std::vector<double>& x, int64_t dx,
                      const std::vector<double>& y, int64_t dy, int64_t n) {
  PairMoments m;
  m.rows = n;
  m.dx = dx;
  m.dy = dy;
  m.sum_x.assign(dx, 0.0);
  m.sum_y.assign(dy, 0.0);
  m.sum_xx.assign(dx * dx, 0.0);
  m.sum_yy.assign(dy * dy, 0.0);
  m.sum_xy.assign(dx * dy, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    const double* xr = x.data() + r * dx;
    const double* yr = y.data() + r * dy;
    for (int64_t i = 0; i < dx; ++i) {
      m.sum_x[i] += xr[i];
      for (int64_t j = 0; j < dx; ++j) m.sum_xx[i * dx + j] += xr[i] * xr[j];
      for (int64_t j = 0; j < dy; ++j) m.sum_xy[i * dy + j] += xr[i] * yr[j];
    }
    for (int64_t i = 0; i < dy; ++i) {
      m.sum_y[i] += yr[i];
      for (int64_t j = 0; j < dy; ++j) m.sum_yy[i * dy + j] += yr[i] * yr[j];
    }
  }
  return m;
}

std::vector<double> TimesMatrix(const std::vector<double>& x, int64_t n,
                                int64_t d, const std::vector<double>& m) {
  std::vector<double> out(n * d, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t k = 0; k < d; ++k) {
      for (int64_t j = 0; j < d; ++j)
        out[r * d + j] += x[r * d + k] * m[k * d + j];
    }
  }
  return out;
}

std::vector<double> Scaled(const std::vector<double>& x, double c) {
  std::vector<double> out(x);
  for (double& v : out) v *= c;
  return out;
}

std::vector<MappedX> OrthogonalAndScaledX() {
  const MeasureCase& c = CaseNamed("full_rank");
  const CaseTransforms& t = Transforms();
  const std::vector<double> xq = TimesMatrix(c.x, c.n, c.dx, t.q);
  return {{"X·Q", xq},
          {"c·X", Scaled(c.x, t.scale)},
          {"c·X·Q", Scaled(xq, t.scale)}};
}

std::vector<double> InvertiblyMappedX() {
  const MeasureCase& c = CaseNamed("full_rank");
  return TimesMatrix(c.x, c.n, c.dx, Transforms().a);
}

PairMoments FullRankMomentsWithX(const std::vector<double>& x) {
  const MeasureCase& c = CaseNamed("full_rank");
  return MomentsOf(x, c.dx, c.y, c.dy, c.n);
}

double RelativeDifference(double a, double b) {
  return std::abs(a - b) / std::max({std::abs(a), std::abs(b),
                                     std::numeric_limits<double>::min()});
}

}  // namespace cka::core::testing
