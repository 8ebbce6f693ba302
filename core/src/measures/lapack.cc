#include "measures/lapack.h"

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/strings/str_format.h"

// LAPACK's Fortran drivers as OpenBLAS exports them (LP64: 32-bit integers),
// with gfortran's hidden lengths of the CHARACTER arguments at the end.
extern "C" {
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a,
             const int* lda, double* w, double* work, const int* lwork,
             int* iwork, const int* liwork, int* info, size_t jobz_len,
             size_t uplo_len);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a,
             const int* lda, double* s, double* u, const int* ldu, double* vt,
             const int* ldvt, double* work, const int* lwork, int* iwork,
             int* info, size_t jobz_len);
}

namespace cka::core::measures_internal {
namespace {

// Both drivers ask for at most this much workspace beyond the documented
// minimum: blocked reductions take n·nb with LAPACK's block size nb <= 64.
constexpr long double kBlockSlack = 64;

long double EigenWorkDoubles(long double n) {
  return 2 * n * n + 6 * n + 1 + (2 + kBlockSlack) * n;
}
long double EigenWorkInts(long double n) { return 5 * n + 3; }

long double SvdWorkDoubles(long double m, long double n, bool vectors) {
  const long double k = std::min(m, n), big = std::max(m, n);
  return (vectors ? 4 * k * k : 0) + 7 * k + big + kBlockSlack * (m + n);
}
long double SvdWorkInts(long double m, long double n) {
  return 8 * std::min(m, n);
}

bool FitsLapackInt(long double v) {
  return v <= static_cast<long double>(std::numeric_limits<int>::max());
}

absl::Status Failure(const char* routine, int64_t m, int64_t n, int info,
                     const char* what) {
  return absl::InternalError(
      absl::StrFormat("LAPACK %s of a %d × %d matrix failed: info = %d (%s)",
                      routine, m, n, info, what));
}

// LAPACK's answer to a workspace query as a whole count, kept in int's range
// (the callers checked that the bound on it fits).
int Workspace(double queried) {
  return static_cast<int>(
      std::clamp(queried + 0.5, 1.0,
                 static_cast<double>(std::numeric_limits<int>::max())));
}

// dsyevd's workspace sizes (lwork, liwork) for order n >= 1; info of the query.
int QueryEigen(int order, int* lwork, int* liwork) {
  int info = 0, query = -1, liwork_queried = 0;
  double lwork_queried = 0;
  dsyevd_("V", "L", &order, nullptr, &order, nullptr, &lwork_queried, &query,
          &liwork_queried, &query, &info, 1, 1);
  *lwork = Workspace(lwork_queried);
  *liwork = std::max(1, liwork_queried);
  return info;
}

// The arguments of one dgesdd call on an m × n matrix (m, n >= 1).
struct SvdCall {
  int rows = 0, cols = 0, ldu = 1, ldvt = 1;
  const char* jobz = "N";
  SvdCall(int64_t m, int64_t n, bool vectors)
      : rows(static_cast<int>(m)),
        cols(static_cast<int>(n)),
        ldu(vectors ? rows : 1),
        ldvt(vectors ? std::min(rows, cols) : 1),
        jobz(vectors ? "S" : "N") {}
  int Run(double* a, double* s, double* u, double* vt, double* work, int lwork,
          int* iwork) const {
    int info = 0;
    dgesdd_(jobz, &rows, &cols, a, &rows, s, u, &ldu, vt, &ldvt, work, &lwork,
            iwork, &info, 1);
    return info;
  }
  // dgesdd's lwork for this call; info of the query in *info.
  int Query(int* info) const {
    double queried = 0;
    *info = Run(nullptr, nullptr, nullptr, nullptr, &queried, -1, nullptr);
    return Workspace(queried);
  }
};

bool SvdFits(int64_t m, int64_t n, bool vectors) {
  return FitsLapackInt(SvdWorkDoubles(m, n, vectors)) &&
         FitsLapackInt(static_cast<long double>(m) * n);
}

}  // namespace

absl::Status SymmetricEigen(Eigen::MatrixXd* a, Eigen::VectorXd* values) {
  if (a->rows() != a->cols()) std::abort();  // a caller's bug
  const int64_t n = a->rows();
  values->resize(n);
  if (n == 0) return absl::OkStatus();
  if (!FitsLapackInt(EigenWorkDoubles(n))) {
    return Failure("dsyevd", n, n, 0, "too large for 32-bit workspace sizes");
  }
  const int order = static_cast<int>(n);
  int lwork = 0, liwork = 0;
  int info = QueryEigen(order, &lwork, &liwork);
  if (info != 0) return Failure("dsyevd", n, n, info, "workspace query");
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  dsyevd_("V", "L", &order, a->data(), &order, values->data(), work.data(),
          &lwork, iwork.data(), &liwork, &info, 1, 1);
  if (info != 0) {
    return Failure("dsyevd", n, n, info,
                   info < 0 ? "an argument was refused"
                            : "no convergence (e.g. a non-finite entry)");
  }
  if (!values->allFinite() || !a->allFinite()) {
    return Failure("dsyevd", n, n, info, "non-finite eigenpairs");
  }
  return absl::OkStatus();
}

absl::StatusOr<Svd> SingularValueDecomposition(Eigen::MatrixXd* a,
                                               bool vectors) {
  const int64_t m = a->rows(), n = a->cols(), k = std::min(m, n);
  Svd out;
  out.values.resize(k);
  Eigen::MatrixXd vt;
  if (vectors) {
    out.u.resize(m, k);
    vt.resize(k, n);
  }
  if (k == 0) {
    out.v.resize(vectors ? n : 0, 0);
    return out;
  }
  if (!SvdFits(m, n, vectors)) {
    return Failure("dgesdd", m, n, 0, "too large for 32-bit workspace sizes");
  }
  const SvdCall call(m, n, vectors);
  int info = 0;
  const int lwork = call.Query(&info);
  if (info != 0) return Failure("dgesdd", m, n, info, "workspace query");
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(SvdWorkInts(m, n)));
  double unused = 0;
  info =
      call.Run(a->data(), out.values.data(), vectors ? out.u.data() : &unused,
               vectors ? vt.data() : &unused, work.data(), lwork, iwork.data());
  if (info != 0) {
    return Failure("dgesdd", m, n, info,
                   info == -4 ? "the matrix has a NaN entry"
                   : info < 0 ? "an argument was refused"
                              : "no convergence");
  }
  if (!out.values.allFinite()) {
    return Failure("dgesdd", m, n, info, "non-finite singular values");
  }
  if (vectors) out.v = vt.transpose();
  return out;
}

Eigen::MatrixXd Multiply(const Eigen::MatrixXd& a, bool transpose_a,
                         const Eigen::MatrixXd& b, bool transpose_b) {
  const int64_t m = transpose_a ? a.cols() : a.rows();
  const int64_t k = transpose_a ? a.rows() : a.cols();
  const int64_t n = transpose_b ? b.rows() : b.cols();
  if ((transpose_b ? b.cols() : b.rows()) != k) std::abort();  // a caller's bug
  Eigen::MatrixXd c(m, n);
  if (m == 0 || n == 0) return c;
  if (k == 0) return Eigen::MatrixXd::Zero(m, n);
  cblas_dgemm(CblasColMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a.data(),
              a.rows(), b.data(), b.rows(), 0.0, c.data(), m);
  return c;
}

long double SymmetricEigenScratchBytes(int64_t n) {
  const long double d = n > 0 ? n : 0;
  return sizeof(double) * EigenWorkDoubles(d) + sizeof(int) * EigenWorkInts(d);
}

long double SvdScratchBytes(int64_t m, int64_t n, bool vectors) {
  const long double r = m > 0 ? m : 0, c = n > 0 ? n : 0;
  const long double k = std::min(r, c);
  // values; U, V and Vᵀ with vectors.
  const long double result = k + (vectors ? (r + 2 * c) * k : 0);
  return sizeof(double) * (result + SvdWorkDoubles(r, c, vectors)) +
         sizeof(int) * SvdWorkInts(r, c);
}

int64_t SymmetricEigenQueriedBytes(int64_t n) {
  if (n < 1 || !FitsLapackInt(EigenWorkDoubles(n))) return -1;
  int lwork = 0, liwork = 0;
  if (QueryEigen(static_cast<int>(n), &lwork, &liwork) != 0) return -1;
  return sizeof(double) * int64_t{lwork} + sizeof(int) * int64_t{liwork};
}

int64_t SvdQueriedBytes(int64_t m, int64_t n, bool vectors) {
  if (m < 1 || n < 1 || !SvdFits(m, n, vectors)) return -1;
  int info = 0;
  const int64_t lwork = SvdCall(m, n, vectors).Query(&info);
  if (info != 0) return -1;
  const int64_t k = std::min(m, n);
  const int64_t result = k + (vectors ? (m + 2 * n) * k : 0);
  return sizeof(double) * (result + lwork) + sizeof(int) * 8 * k;
}

}  // namespace cka::core::measures_internal
