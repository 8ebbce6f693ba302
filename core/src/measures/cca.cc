#include "cka/core/measures/cca.h"

#include <algorithm>
#include <cstdint>

#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::Canonical;
using measures_internal::CanonicalCorrelations;
using measures_internal::CentredPair;
using measures_internal::CentreWithSpectra;

namespace measures_internal {

absl::StatusOr<CcaSimilarity> CcaOf(const CentredPair& c) {
  absl::StatusOr<Canonical> solved =
      CanonicalCorrelations(c.x, c.y, c.moments.xy, /*vectors=*/false);
  if (!solved.ok()) return solved.status();
  const Canonical& canonical = *solved;
  CcaSimilarity out;
  out.rank_x = c.x.values.size();
  out.rank_y = c.y.values.size();
  out.forced_unit =
      std::max<int64_t>(0, out.rank_x + out.rank_y - (c.moments.rows - 1));
  const double p = static_cast<double>(canonical.rho.size());
  out.r2 = canonical.rho.squaredNorm() / p;
  out.mean_rho = canonical.rho.sum() / p;
  out.rho.assign(canonical.rho.data(),
                 canonical.rho.data() + canonical.rho.size());
  return out;
}

}  // namespace measures_internal

absl::StatusOr<CcaSimilarity> Cca(const PairMoments& moments) {
  absl::StatusOr<CentredPair> c = CentreWithSpectra(moments, "CCA");
  if (!c.ok()) return c.status();
  return measures_internal::CcaOf(*c);
}

}  // namespace cka::core
