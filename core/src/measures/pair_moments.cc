#include "cka/core/measures/pair_moments.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "measures/lapack.h"

namespace cka::core {

PairMoments SwapSides(const PairMoments& m) {
  PairMoments s;
  s.rows = m.rows;
  s.dx = m.dy;
  s.dy = m.dx;
  s.sum_x = m.sum_y;
  s.sum_y = m.sum_x;
  s.sum_xx = m.sum_yy;
  s.sum_yy = m.sum_xx;
  int64_t cells = 0;
  if (m.dx >= 0 && m.dy >= 0 && !__builtin_mul_overflow(m.dx, m.dy, &cells) &&
      m.sum_xy.size() == static_cast<uint64_t>(cells)) {
    s.sum_xy.resize(m.sum_xy.size());
    for (int64_t i = 0; i < m.dx; ++i) {
      for (int64_t j = 0; j < m.dy; ++j) {
        s.sum_xy[j * m.dx + i] = m.sum_xy[i * m.dy + j];
      }
    }
  } else {
    s.sum_xy = m.sum_xy;
  }
  return s;
}

int64_t MomentMeasureBytes(int64_t dx, int64_t dy) {
  using measures_internal::SvdScratchBytes;
  using measures_internal::SymmetricEigenScratchBytes;
  const long double x = dx > 0 ? dx : 0, y = dy > 0 ? dy : 0;
  const long double big = x > y ? x : y;
  // Held throughout: the three centred moments, the regression's copy of
  // C_xy, and both kept spectra (eigenvectors and values), which the
  // session's queries copy once more into a CentredPair.
  const long double held =
      8 * (x * x + y * y + 2 * x * y) + 2 * 8 * (x * x + y * y + x + y);
  // Then the largest of these peaks (measures/lapack.h). Decomposing one side:
  // dsyevd's copy of the moment, its eigenvalues and workspace, then the copy
  // and the kept eigenvectors.
  const long double decompose =
      8 * (big * big + big) +
      std::max(SymmetricEigenScratchBytes(static_cast<int64_t>(big)),
               8 * (big * big + big));
  // The whitened cross moment T (at most dx × dy) with the product before it,
  // or T with dgesdd's result and workspace, or PWCCA's two matrices of at
  // most dx × dy next to the kept singular vectors.
  const long double k = x < y ? x : y;
  const long double cross =
      std::max({16 * x * y, 8 * x * y + SvdScratchBytes(dx, dy, true),
                8 * (k + (x + y) * k) + 16 * x * y});
  const long double bytes =
      held + std::max(decompose, cross) + 8 * 64 * (x + y);
  if (bytes >= static_cast<long double>(std::numeric_limits<int64_t>::max()))
    return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(bytes);
}

}  // namespace cka::core
