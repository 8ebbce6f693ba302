// The comparison family's matrix over a session's exact feature-space sums
// (core/MATH.md, "Comparison family from second moments"). Internal to
// cka::core; Session::Query calls it for a measure whose kind is a moment
// kind.
//
// Layout: as session_state.h (ExactSums); `values` is nr × nc row-major.
#ifndef CKA_CORE_SRC_MOMENT_MATRIX_H_
#define CKA_CORE_SRC_MOMENT_MATRIX_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cka/core/config.h"
#include "cka/core/measures/pair_moments.h"
#include "session_state.h"
#include "spectrum_cache.h"

namespace cka::core {

// Returns the PairMoments of streams s (as X) and t (as Y) cut from `ex`: the
// diagonal blocks of Σ x·xᵀ, the block at s's rows and t's columns (transposed
// from the stored upper triangle when t comes first), Σ x and N.
PairMoments PairMomentsOf(const ExactSums& ex, int s, int t);

// Returns the bytes MomentMatrix allocates beyond its result for the distinct
// streams of its rows and columns, of widths `widths`: each stream's kept
// spectrum (d² + d values), and one PairMoments and one measure's scratch
// (MomentMeasureBytes) of the widest. Saturates at INT64_MAX.
int64_t MomentMatrixBytes(const std::vector<int64_t>& widths);

// Writes the moment measure `kind` of rows × cols (stream indices of `ex`) to
// `values` (nr × nc, NaN where it has no value) and returns a note for the
// user: why entries are NaN, and where CCA's correlations are forced to 1;
// empty when there is nothing to say. `row_names` and `col_names` name the
// streams of `rows` and `cols` in the note. Entry (i, j) of an asymmetric
// kind has X = rows[i], Y = cols[j]; a symmetric kind computes each unordered
// pair once, with X the stream of lower index. Each stream's centred moment
// is decomposed once (S eigendecompositions for S streams, not 2·S²), or not
// at all when `kept` has its spectrum (a view without a cache keeps nothing);
// the spectra it computes are offered to `kept`. The values are those of
// the public measure functions (cca.h, svcca.h, pwcca.h, linear_regression.h,
// procrustes.h) on each pair, and the same bits whatever the query's shape and
// whether spectra came from `kept` (the decomposition is deterministic).
// Requires ex.dim > 0. `cancelled` (may be empty) is polled before each pair
// (O(p³) each): once it returns true, MomentMatrix stops with Cancelled
// saying how far it got, and `values` is partly written.
absl::StatusOr<std::string> MomentMatrix(
    const ExactSums& ex, const std::vector<int>& rows,
    const std::vector<int>& cols, MeasureKind kind,
    const std::vector<std::string>& row_names,
    const std::vector<std::string>& col_names, double* values,
    const SpectrumCacheView& kept, const std::function<bool()>& cancelled);

}  // namespace cka::core

#endif  // CKA_CORE_SRC_MOMENT_MATRIX_H_
