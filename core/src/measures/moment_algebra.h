// The linear algebra the moment measures share: centring the raw sums of a
// PairMoments, the rank rule, whitening and the canonical correlations.
// Internal to cka::core (Eigen stays out of the public headers).
//
// Layout: Eigen's column-major dense matrices; shapes are given per field.
#ifndef CKA_CORE_SRC_MEASURES_MOMENT_ALGEBRA_H_
#define CKA_CORE_SRC_MEASURES_MOMENT_ALGEBRA_H_

#include <cstdint>
#include <string_view>

#include "Eigen/Dense"
#include "absl/status/statusor.h"
#include "cka/core/measures/cca.h"
#include "cka/core/measures/pair_moments.h"
#include "cka/core/measures/pwcca.h"
#include "cka/core/measures/svcca.h"

namespace cka::core::measures_internal {

// C = Σ·ᵀ − (Σ·)(Σ·)ᵀ / N for both streams and their cross term, float64.
struct CentredMoments {
  int64_t rows = 0;
  Eigen::MatrixXd xx;  // dx × dx, symmetric (both triangles filled)
  Eigen::MatrixXd yy;  // dy × dy, symmetric
  Eigen::MatrixXd xy;  // dx × dy
  double floor_x = 0;  // kCancellationFloor · max_i (Σ x·xᵀ)_ii
  double floor_y = 0;
};

// Checks `m` (sizes, finite values, rows >= 1) and returns its centred moments.
// InvalidArgument naming `measure`, the field and its value otherwise.
absl::StatusOr<CentredMoments> Centre(const PairMoments& m,
                                      std::string_view measure);

// The eigenpairs of one centred moment C (d × d) that the rank rule keeps.
struct KeptSpectrum {
  Eigen::MatrixXd vectors;  // d × r, orthonormal columns, by λ descending
  Eigen::VectorXd values;   // r, descending, all > 0
  double largest = 0;       // λ_max of C (0 or rounding when r = 0)
  double total = 0;         // Σ of the kept eigenvalues (tr C at full rank)
  double zero = 0;          // the rank rule's threshold: kept λ exceed it
};

// Eigendecomposes the symmetric `c` and applies the rank rule with `floor`
// (CentredMoments::floor_x or floor_y); r may be 0 (no variance). The same
// for every measure, so a caller may keep it for many queries. Internal when
// LAPACK's eigensolver fails (measures/lapack.h).
absl::StatusOr<KeptSpectrum> Decompose(const Eigen::MatrixXd& c, double floor);

// OK when `s` keeps a direction; else FailedPrecondition naming `measure` and
// `side` ("X", "Y" or a stream's quoted name): the stream has no variance.
absl::Status CheckVariance(const KeptSpectrum& s, std::string_view measure,
                           std::string_view side);

// Decompose, then CheckVariance; a non-convergence names `measure` and `side`.
absl::StatusOr<KeptSpectrum> Spectrum(const Eigen::MatrixXd& c, double floor,
                                      std::string_view measure,
                                      std::string_view side);

// The centred moments and both kept spectra: what CCA, SVCCA, PWCCA and
// Procrustes start from. The errors of Centre and Spectrum.
struct CentredPair {
  CentredMoments moments;
  KeptSpectrum x;
  KeptSpectrum y;
};
absl::StatusOr<CentredPair> CentreWithSpectra(const PairMoments& m,
                                              std::string_view measure);

// The first `r` eigenpairs of `s` (r <= s.values.size()).
KeptSpectrum Leading(const KeptSpectrum& s, int64_t r);

// The canonical correlations of two kept subspaces: the SVD
// T = Λx^{-1/2}·Uxᵀ·Cxy·Uy·Λy^{-1/2} = A·diag(ρ)·Bᵀ, with Ux, Λx of `x`
// (dx × rx, rx) and Uy, Λy of `y` (dy × ry, ry). Internal when LAPACK's SVD
// fails (measures/lapack.h).
struct Canonical {
  Eigen::VectorXd rho;  // p = min(rx, ry) singular values, descending
  Eigen::MatrixXd a;    // rx × p, left singular vectors of T (with vectors)
  Eigen::MatrixXd b;    // ry × p, right singular vectors of T (with vectors)
};
absl::StatusOr<Canonical> CanonicalCorrelations(const KeptSpectrum& x,
                                                const KeptSpectrum& y,
                                                const Eigen::MatrixXd& cxy,
                                                bool vectors);

// The measures from centred moments and both kept spectra: what Cca, Svcca,
// Pwcca and ProcrustesSimilarity compute after CentreWithSpectra, for a caller
// that decomposed each stream once for many pairs (the session's moment
// queries). `c.x` and `c.y` must be the spectra of c.moments.xx and .yy.
// Internal when LAPACK's SVD fails.
absl::StatusOr<CcaSimilarity> CcaOf(const CentredPair& c);
absl::StatusOr<SvccaSimilarity> SvccaOf(const CentredPair& c);
absl::StatusOr<PwccaSimilarity> PwccaOf(const CentredPair& c);
absl::StatusOr<double> ProcrustesOf(const CentredPair& c);
// R² of the fit of Q from P: ‖Λ_P^{-1/2}·U_Pᵀ·C_PQ·U_Q‖²_F / Σ λ_Q with
// `cross` = C_PQ (d_P × d_Q); `p` null when P has no variance (R² = 0).
double RegressionOf(const Eigen::MatrixXd& cross, const KeptSpectrum* p,
                    const KeptSpectrum& q);

}  // namespace cka::core::measures_internal

#endif  // CKA_CORE_SRC_MEASURES_MOMENT_ALGEBRA_H_
