// The share of one stream's variance that a least-squares linear fit from the
// other explains, from their second moments (core/MATH.md, "Linear
// regression").
//
// Layout and errors: see pair_moments.h. Thread-safe; pure function.
#ifndef CKA_CORE_MEASURES_LINEAR_REGRESSION_H_
#define CKA_CORE_MEASURES_LINEAR_REGRESSION_H_

#include "absl/status/statusor.h"
#include "cka/core/measures/pair_moments.h"

namespace cka::core {

// Which stream is the predictor. In a similarity matrix the row predicts the
// column: entry (s, t) is R²(s → t).
enum class RegressionDirection {
  kXPredictsY,  // R²(X → Y) = tr(Cyx·Cxx⁺·Cxy) / tr(Cyy)
  kYPredictsX,  // R²(Y → X) = tr(Cxy·Cyy⁺·Cyx) / tr(Cxx)
};

// Returns R² of the least-squares fit (with intercept) of the predicted stream
// from the predictor, in [0, 1], each stream seen through the eigenpairs the
// rank rule keeps (pair_moments.h): Cxx⁺ is the pseudo-inverse over them, so a
// predictor without variance explains 0. InvalidArgument for malformed moments;
// FailedPrecondition when the predicted stream has no variance (0 / 0).
absl::StatusOr<double> LinearRegressionR2(const PairMoments& moments,
                                          RegressionDirection direction);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_LINEAR_REGRESSION_H_
