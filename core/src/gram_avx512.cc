// Compiled with AVX-512 (core/CMakeLists.txt) and called only where the CPU
// has it (linear_gram.h). Eigen is header-only: under its own namespace name,
// this file's AVX-512 copies of its templates would be merged at link time
// with the baseline copies of other files, and a CPU without AVX-512 could
// then run them. Renaming the namespace keeps them apart.
#define Eigen cka_core_eigen_avx512
#include <Eigen/Core>

#include "linear_gram.h"

namespace cka::core::internal {

void LinearGramUpperAvx512(const float* x, int64_t n, int64_t d, float* k) {
  using Rows =
      Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const Rows> xs(x, n, d);
  // Row-major K's upper triangle is the lower one of the same bytes read
  // column-major.
  Eigen::Map<Eigen::MatrixXf> lower(k, n, n);
  lower.triangularView<Eigen::Lower>().setZero();
  lower.selfadjointView<Eigen::Lower>().rankUpdate(xs);
}

}  // namespace cka::core::internal
