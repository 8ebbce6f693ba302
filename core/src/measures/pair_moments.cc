#include "cka/core/measures/pair_moments.h"

#include <cstdint>
#include <limits>

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
  // Peak of any measure: the three centred moments, an eigensolver's copy and
  // the kept eigenvectors of each side, the whitened cross moment and an SVD
  // of it with both factors, plus vectors of length dx + dy.
  const long double x = dx > 0 ? dx : 0, y = dy > 0 ? dy : 0;
  const long double big = x > y ? x : y;
  const long double doubles =
      3 * (x * x + y * y) + 3 * x * y + 4 * big * big + 64 * (x + y);
  const long double bytes = 8 * doubles;
  if (bytes >= static_cast<long double>(std::numeric_limits<int64_t>::max()))
    return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(bytes);
}

}  // namespace cka::core
