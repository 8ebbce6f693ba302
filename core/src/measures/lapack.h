// The comparison family's dense steps through OpenBLAS: LAPACK's
// divide-and-conquer drivers (dsyevd for symmetric eigendecompositions, dgesdd
// for SVDs) and BLAS dgemm for the O(d³) products. Internal to cka::core.
//
// Layout: Eigen's column-major dense matrices, which is LAPACK's layout; shapes
// are given per function. Each call uses as many threads as OpenBLAS is set to
// (SetBlasThreads in hsic.h; nothing here changes it), and gives the same bits
// for the same input and thread count. Thread-safe: no state of its own.
#ifndef CKA_CORE_SRC_MEASURES_LAPACK_H_
#define CKA_CORE_SRC_MEASURES_LAPACK_H_

#include <cstdint>

#include "Eigen/Dense"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cka::core::measures_internal {

// Eigendecomposes the symmetric n × n `*a` (only its lower triangle is read)
// with dsyevd: on success `*a` holds orthonormal eigenvectors as columns and
// `*values` (resized to n) the eigenvalues ascending, eigenvalue k belonging
// to column k. Internal naming dsyevd, n and LAPACK's info when it fails (a
// non-finite entry makes it fail) or gives non-finite eigenvalues, or when n
// is too large for LAPACK's 32-bit workspace sizes; `*a` is then unspecified.
absl::Status SymmetricEigen(Eigen::MatrixXd* a, Eigen::VectorXd* values);

// The SVD a = U·diag(values)·Vᵀ of an m × n matrix, k = min(m, n).
struct Svd {
  Eigen::VectorXd values;  // k singular values, descending, >= 0
  Eigen::MatrixXd u;       // m × k orthonormal columns (empty without vectors)
  Eigen::MatrixXd v;       // n × k orthonormal columns (empty without vectors)
};

// Returns the SVD of the m × n `*a` by dgesdd, with the thin U and V when
// `vectors`; `*a` is overwritten. Internal naming dgesdd, m × n and info when
// LAPACK fails (NaN input makes it refuse) or gives non-finite values, or when
// the sizes exceed LAPACK's 32-bit workspace sizes.
absl::StatusOr<Svd> SingularValueDecomposition(Eigen::MatrixXd* a,
                                               bool vectors);

// Returns op(a)·op(b) by dgemm, op(m) = mᵀ when the matching flag is set. The
// inner dimensions must agree (checked by CHECK-style abort: a caller's bug).
Eigen::MatrixXd Multiply(const Eigen::MatrixXd& a, bool transpose_a,
                         const Eigen::MatrixXd& b, bool transpose_b);

// Returns an upper bound on the bytes SymmetricEigen allocates beyond `*a`
// and `*values` for order n (dsyevd's workspaces), from LAPACK's documented
// minimum plus its largest blocking, for a caller that prices the call first.
long double SymmetricEigenScratchBytes(int64_t n);

// Returns an upper bound on the bytes SingularValueDecomposition allocates
// beyond `*a` for an m × n matrix: its result (values, U and V), Vᵀ as dgesdd
// writes it, and dgesdd's workspaces.
long double SvdScratchBytes(int64_t m, int64_t n, bool vectors);

// Return what SymmetricEigen and SingularValueDecomposition would allocate for
// these sizes as LAPACK's workspace queries (lwork = -1) answer, so that tests
// can hold the bounds above to them; -1 when the query fails.
int64_t SymmetricEigenQueriedBytes(int64_t n);
int64_t SvdQueriedBytes(int64_t m, int64_t n, bool vectors);

}  // namespace cka::core::measures_internal

#endif  // CKA_CORE_SRC_MEASURES_LAPACK_H_
