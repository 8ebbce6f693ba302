#include "moment_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cka/core/measures/cca.h"
#include "cka/core/measures/linear_regression.h"
#include "cka/core/measures/procrustes.h"
#include "cka/core/measures/pwcca.h"
#include "cka/core/measures/svcca.h"
#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::Centre;
using measures_internal::CentredMoments;
using measures_internal::CentredPair;
using measures_internal::CheckVariance;
using measures_internal::Decompose;
using measures_internal::KeptSpectrum;

namespace {

// Returns the d × d block of `ex`'s Σ x·xᵀ at offsets (r0, c0), row-major, for
// r0 <= c0 read from the stored upper triangle (a diagonal block keeps its
// upper triangle only, which is what PairMoments reads).
std::vector<double> UpperBlock(const ExactSums& ex, int64_t r0, int64_t rn,
                               int64_t c0, int64_t cn) {
  std::vector<double> out(static_cast<size_t>(rn * cn), 0.0);
  for (int64_t i = 0; i < rn; ++i) {
    const int64_t from = std::max<int64_t>(0, r0 + i - c0);  // j >= i in ex
    for (int64_t j = from; j < cn; ++j) {
      out[i * cn + j] = ex.xx[(r0 + i) * ex.dim + c0 + j];
    }
  }
  return out;
}

// The measure's name in messages, as the public functions write it.
const char* Label(MeasureKind kind) {
  switch (kind) {
    case MeasureKind::kCcaR2:
    case MeasureKind::kCcaMeanRho:
      return "CCA";
    case MeasureKind::kSvcca:
      return "SVCCA";
    case MeasureKind::kPwcca:
      return "PWCCA";
    case MeasureKind::kRegressionR2:
      return "linear regression R²(X → Y)";
    case MeasureKind::kProcrustes:
      return "orthogonal Procrustes";
    case MeasureKind::kCka:
      break;
  }
  return "CKA";
}

// The kept spectrum of stream s's centred moment, from `kept` when it has it,
// else computed and offered to it; FailedPrecondition naming the stream when
// it has no variance.
absl::StatusOr<SharedSpectrum> StreamSpectrum(const ExactSums& ex, int s,
                                              MeasureKind kind,
                                              const std::string& name,
                                              const SpectrumCacheView& kept) {
  const std::string side = absl::StrCat("'", name, "'");
  SharedSpectrum spectrum = kept.Find(s);
  if (spectrum == nullptr) {
    absl::StatusOr<CentredMoments> c =
        Centre(PairMomentsOf(ex, s, s), Label(kind));
    if (!c.ok()) return c.status();
    absl::StatusOr<KeptSpectrum> d = Decompose(c->xx, c->floor_x);
    if (!d.ok()) {
      return absl::Status(d.status().code(),
                          absl::StrFormat("%s: stream %s: %s", Label(kind),
                                          side, d.status().message()));
    }
    spectrum = std::make_shared<const KeptSpectrum>(*std::move(d));
    kept.Insert(s, spectrum);
  }
  if (absl::Status v = CheckVariance(*spectrum, Label(kind), side); !v.ok()) {
    return v;
  }
  return spectrum;
}

// The measure of the pair (X = s, Y = t) from the streams' spectra `x` and
// `y`: the value the public measure function of `kind` gives on
// PairMomentsOf(ex, s, t).
absl::StatusOr<double> PairValue(MeasureKind kind, const ExactSums& ex, int s,
                                 int t, const absl::StatusOr<SharedSpectrum>& x,
                                 const absl::StatusOr<SharedSpectrum>& y,
                                 int64_t* forced_unit) {
  *forced_unit = 0;
  if (!y.ok()) return y.status();
  // A predictor without variance explains nothing (core/MATH.md, "Linear
  // regression"); every other measure needs both.
  const bool zero_predictor = kind == MeasureKind::kRegressionR2 &&
                              absl::IsFailedPrecondition(x.status());
  if (!x.ok() && !zero_predictor) return x.status();
  absl::StatusOr<CentredMoments> c =
      Centre(PairMomentsOf(ex, s, t), Label(kind));
  if (!c.ok()) return c.status();
  if (kind == MeasureKind::kRegressionR2) {
    return RegressionOf(c->xy, zero_predictor ? nullptr : x->get(), **y);
  }
  const CentredPair pair{*std::move(c), **x, **y};
  switch (kind) {
    case MeasureKind::kCcaR2:
    case MeasureKind::kCcaMeanRho: {
      absl::StatusOr<CcaSimilarity> cca = CcaOf(pair);
      if (!cca.ok()) return cca.status();
      *forced_unit = cca->forced_unit;
      return kind == MeasureKind::kCcaR2 ? cca->r2 : cca->mean_rho;
    }
    case MeasureKind::kSvcca: {
      absl::StatusOr<SvccaSimilarity> svcca = SvccaOf(pair);
      if (!svcca.ok()) return svcca.status();
      return svcca->value;
    }
    case MeasureKind::kPwcca: {
      absl::StatusOr<PwccaSimilarity> pwcca = PwccaOf(pair);
      if (!pwcca.ok()) return pwcca.status();
      return pwcca->value;
    }
    case MeasureKind::kProcrustes:
      return ProcrustesOf(pair);
    case MeasureKind::kRegressionR2:
    case MeasureKind::kCka:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("kind ", MeasureKindName(kind), " is not a moment measure"));
}

bool IsSymmetric(MeasureKind kind) {
  return kind != MeasureKind::kRegressionR2 && kind != MeasureKind::kPwcca;
}

}  // namespace

PairMoments PairMomentsOf(const ExactSums& ex, int s, int t) {
  PairMoments m;
  const int64_t s0 = ex.offset[s], t0 = ex.offset[t];
  m.rows = ex.rows;
  m.dx = ex.offset[s + 1] - s0;
  m.dy = ex.offset[t + 1] - t0;
  m.sum_x.assign(ex.x.begin() + s0, ex.x.begin() + s0 + m.dx);
  m.sum_y.assign(ex.x.begin() + t0, ex.x.begin() + t0 + m.dy);
  m.sum_xx = UpperBlock(ex, s0, m.dx, s0, m.dx);
  m.sum_yy = s == t ? m.sum_xx : UpperBlock(ex, t0, m.dy, t0, m.dy);
  if (s < t) {
    m.sum_xy = UpperBlock(ex, s0, m.dx, t0, m.dy);
  } else if (s == t) {
    m.sum_xy = m.sum_xx;
    for (int64_t i = 0; i < m.dx; ++i) {
      for (int64_t j = 0; j < i; ++j) {
        m.sum_xy[i * m.dx + j] = m.sum_xy[j * m.dx + i];
      }
    }
  } else {
    // The stored block has t's rows and s's columns: transpose it.
    const std::vector<double> block = UpperBlock(ex, t0, m.dy, s0, m.dx);
    m.sum_xy.resize(static_cast<size_t>(m.dx * m.dy));
    for (int64_t i = 0; i < m.dx; ++i) {
      for (int64_t j = 0; j < m.dy; ++j) {
        m.sum_xy[i * m.dy + j] = block[j * m.dx + i];
      }
    }
  }
  return m;
}

int64_t MomentMatrixBytes(const std::vector<int64_t>& widths) {
  int64_t widest = 0;
  long double spectra = 0;
  for (int64_t d : widths) {
    widest = std::max(widest, d);
    spectra += 8.0L * (static_cast<long double>(d) * d + 2.0L * d);
  }
  const long double copy = 8.0L * (3.0L * widest * widest + 2.0L * widest);
  const long double total =
      spectra + copy +
      static_cast<long double>(MomentMeasureBytes(widest, widest));
  if (total >= static_cast<long double>(std::numeric_limits<int64_t>::max()))
    return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(total);
}

absl::StatusOr<std::string> MomentMatrix(
    const ExactSums& ex, const std::vector<int>& rows,
    const std::vector<int>& cols, MeasureKind kind,
    const std::vector<std::string>& row_names,
    const std::vector<std::string>& col_names, double* values,
    const SpectrumCacheView& kept, const std::function<bool()>& cancelled) {
  const size_t nc = cols.size();
  const bool symmetric = IsSymmetric(kind);
  // Each stream's centred moment is decomposed once per query, not once per
  // pair: an S × S matrix costs S eigendecompositions and S² products/SVDs;
  // none for a stream whose spectrum `kept` has.
  std::map<int, std::string> names;
  for (size_t i = 0; i < rows.size(); ++i) names[rows[i]] = row_names[i];
  for (size_t j = 0; j < nc; ++j) names[cols[j]] = col_names[j];
  std::map<int, absl::StatusOr<SharedSpectrum>> spectra;
  auto spectrum = [&](int s) -> const absl::StatusOr<SharedSpectrum>& {
    auto it = spectra.find(s);
    if (it == spectra.end()) {
      it =
          spectra.emplace(s, StreamSpectrum(ex, s, kind, names[s], kept)).first;
    }
    return it->second;
  };
  std::map<std::pair<int, int>, std::pair<double, int64_t>> done;
  int64_t undefined = 0, forced = 0, most_forced = 0;
  std::string first_undefined, first_forced;
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < nc; ++j) {
      const int s = rows[i], t = cols[j];
      const std::pair<int, int> key(symmetric ? std::min(s, t) : s,
                                    symmetric ? std::max(s, t) : t);
      auto it = done.find(key);
      double value = std::numeric_limits<double>::quiet_NaN();
      int64_t forced_unit = 0;
      if (it != done.end()) {
        std::tie(value, forced_unit) = it->second;
      } else {
        if (cancelled && cancelled()) {
          return absl::CancelledError(absl::StrFormat(
              "the %s query was cancelled by its caller (deadline or "
              "cancellation) after %d of its pairs",
              MeasureKindName(kind), done.size()));
        }
        // A symmetric kind is computed with X the stream of lower index, so
        // that every query gives a pair the same bits.
        const bool x_is_row = key.first == s;
        absl::StatusOr<double> v =
            PairValue(kind, ex, key.first, key.second, spectrum(key.first),
                      spectrum(key.second), &forced_unit);
        if (v.ok()) {
          value = *v;
        } else if (undefined == 0) {
          first_undefined = absl::StrFormat(
              "'%s' (X) with '%s' (Y): %s",
              x_is_row ? row_names[i] : col_names[j],
              x_is_row ? col_names[j] : row_names[i], v.status().message());
        }
        done[key] = {value, forced_unit};
      }
      values[i * nc + j] = value;
      if (std::isnan(value)) ++undefined;
      if (forced_unit > 0) {
        if (forced == 0) {
          first_forced = absl::StrFormat("row '%s', column '%s'", row_names[i],
                                         col_names[j]);
        }
        ++forced;
        most_forced = std::max(most_forced, forced_unit);
      }
    }
  }
  std::string note;
  if (undefined > 0) {
    absl::StrAppendFormat(&note,
                          "%d of %d entries have no value (NaN), e.g. %s",
                          undefined, rows.size() * nc, first_undefined);
  }
  if (forced > 0) {
    if (!note.empty()) note += "; ";
    absl::StrAppendFormat(
        &note,
        "%d entries have up to %d canonical correlations equal to 1 whatever "
        "the data, because the streams' widths are close to or above the %d "
        "rows (e.g. %s; core/MATH.md, \"CCA\")",
        forced, most_forced, ex.rows, first_forced);
  }
  return note;
}

}  // namespace cka::core
