// Orthogonal Procrustes similarity of two streams from their second moments
// (core/MATH.md, "Orthogonal Procrustes").
//
// Layout and errors: see pair_moments.h. Thread-safe; pure function.
#ifndef CKA_CORE_MEASURES_PROCRUSTES_H_
#define CKA_CORE_MEASURES_PROCRUSTES_H_

#include "absl/status/statusor.h"
#include "cka/core/measures/pair_moments.h"

namespace cka::core {

// Returns ‖Cxy‖_* / √(tr Cxx · tr Cyy) in [0, 1] (‖·‖_* the nuclear norm),
// each stream seen through its kept eigen-directions (pair_moments.h): 1 − d²/2
// for the orthogonal Procrustes distance d of the centred streams scaled to
// unit Frobenius norm (the narrower one padded with zero columns).
// InvalidArgument for malformed moments; FailedPrecondition when X or Y has no
// variance.
absl::StatusOr<double> ProcrustesSimilarity(const PairMoments& moments);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_PROCRUSTES_H_
