// The running sums of two streams over the same rows, from which every measure
// of the comparison family is computed (core/MATH.md, "Comparison family from
// second moments"), and the rank rule they share (core/MATH.md, "Rank rule and
// invariances").
//
// Layout: x is one example's activations of stream X (dx values), y the same
// example's of stream Y (dy values). Matrices are row-major float64: sum_xx is
// dx × dx with Σ x_i·x_j at [i * dx + j], sum_yy is dy × dy likewise, sum_xy is
// dx × dy with Σ x_i·y_j at [i * dy + j]. Of sum_xx and sum_yy only the upper
// triangle (j >= i) is read, as the exact estimators keep Σ x·xᵀ.
//
// The measures (cca.h, svcca.h, pwcca.h, linear_regression.h, procrustes.h)
// are pure functions of a PairMoments: thread-safe, they read their argument
// and allocate only their result and O(dx² + dy² + dx·dy) float64 scratch
// (MomentMeasureBytes). They return InvalidArgument for malformed sums (sizes,
// non-finite values, rows < 1) and FailedPrecondition where the measure is
// undefined on these data (a stream without variance), each message naming the
// measure, the quantity and its value.
#ifndef CKA_CORE_MEASURES_PAIR_MOMENTS_H_
#define CKA_CORE_MEASURES_PAIR_MOMENTS_H_

#include <cstdint>
#include <vector>

namespace cka::core {

struct PairMoments {
  int64_t rows = 0;  // N, the examples summed over (both streams saw them all)
  int64_t dx = 0;    // width of stream X
  int64_t dy = 0;    // width of stream Y
  std::vector<double> sum_x;   // dx: Σ x
  std::vector<double> sum_y;   // dy: Σ y
  std::vector<double> sum_xx;  // dx × dx: Σ x·xᵀ (upper triangle read)
  std::vector<double> sum_yy;  // dy × dy: Σ y·yᵀ (upper triangle read)
  std::vector<double> sum_xy;  // dx × dy: Σ x·yᵀ
};

// Rank rule: an eigenvalue λ of a centred moment C is treated as zero when
// λ <= kRankTolerance·λ_max, or when λ <= kCancellationFloor·max_i (Σ x·xᵀ)_ii
// (the rounding left by centring raw sums in float64). A stream whose largest
// eigenvalue is zero by this rule has no variance. Every measure sees a stream
// only through its kept eigenpairs: inverse square roots and pseudo-inverses
// use them alone, and traces are sums of kept eigenvalues.
inline constexpr double kRankTolerance = 1e-10;
inline constexpr double kCancellationFloor = 1e-12;

// SVCCA keeps, per side, the fewest leading eigen-directions that hold this
// share of the stream's centred variance.
inline constexpr double kSvccaVarianceShare = 0.99;

// Returns the pair's moments with X and Y exchanged (sum_xy transposed; the
// upper triangles of sum_xx and sum_yy are kept as they are). Does not check
// sizes: a malformed argument gives a malformed result, which every measure
// refuses.
PairMoments SwapSides(const PairMoments& m);

// Returns an upper bound on the bytes of scratch any one measure of this
// family allocates for streams of widths dx and dy (saturating at INT64_MAX),
// for a caller that prices allocations before making them.
int64_t MomentMeasureBytes(int64_t dx, int64_t dy);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_PAIR_MOMENTS_H_
