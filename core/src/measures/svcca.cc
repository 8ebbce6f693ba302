#include "cka/core/measures/svcca.h"

#include <cstdint>

#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::Canonical;
using measures_internal::CanonicalCorrelations;
using measures_internal::CentredPair;
using measures_internal::CentreWithSpectra;
using measures_internal::KeptSpectrum;
using measures_internal::Leading;

namespace {

// The fewest leading eigenvalues of `s` that hold kSvccaVarianceShare of its
// total (at most all kept ones).
int64_t VarianceDirections(const KeptSpectrum& s) {
  const int64_t r = s.values.size();
  double held = 0.0;
  for (int64_t k = 0; k < r; ++k) {
    held += s.values(k);
    if (held >= kSvccaVarianceShare * s.total) return k + 1;
  }
  return r;
}

}  // namespace

namespace measures_internal {

absl::StatusOr<SvccaSimilarity> SvccaOf(const CentredPair& c) {
  SvccaSimilarity out;
  out.kept_x = VarianceDirections(c.x);
  out.kept_y = VarianceDirections(c.y);
  absl::StatusOr<Canonical> solved = CanonicalCorrelations(
      Leading(c.x, out.kept_x), Leading(c.y, out.kept_y), c.moments.xy,
      /*vectors=*/false);
  if (!solved.ok()) return solved.status();
  const Canonical& canonical = *solved;
  out.value = canonical.rho.sum() / static_cast<double>(canonical.rho.size());
  out.rho.assign(canonical.rho.data(),
                 canonical.rho.data() + canonical.rho.size());
  return out;
}

}  // namespace measures_internal

absl::StatusOr<SvccaSimilarity> Svcca(const PairMoments& moments) {
  absl::StatusOr<CentredPair> c = CentreWithSpectra(moments, "SVCCA");
  if (!c.ok()) return c.status();
  return measures_internal::SvccaOf(*c);
}

}  // namespace cka::core
