// An independent float64 reference of core/MATH.md, "Minibatch CKA", as plain
// loops straight from the formulas (no Eigen, no BLAS, no code shared with
// core), for the end-to-end tests.
//
// Layout: X is n × d row-major, element (i, j) at x[i * d + j]; kernels are n ×
// n row-major.
#ifndef CKA_TESTS_E2E_REFERENCE_CKA_H_
#define CKA_TESTS_E2E_REFERENCE_CKA_H_

#include <map>
#include <string>
#include <vector>

namespace cka::testing {

struct Activations {
  int n = 0;
  int d = 0;
  std::vector<double> x;  // n × d
};

// One batch: the activations of each stream ("source/layer") that saw it.
using ReferenceBatch = std::map<std::string, Activations>;

// Returns K = X·Xᵀ (n × n).
std::vector<double> ReferenceGram(const Activations& a);
// HSIC₁ (unbiased, Song et al.) and HSIC₀ (biased, tr(KHLH)/(n−1)²) of two n ×
// n kernels.
double ReferenceHsicUnbiased(const std::vector<double>& k,
                             const std::vector<double>& l, int n);
double ReferenceHsicBiased(const std::vector<double>& k,
                           const std::vector<double>& l, int n);

// Returns minibatch CKA(s, t) over `batches` (only batches holding both streams
// count), or NaN when there is no common batch. `unbiased` picks the estimator.
double ReferenceMinibatchCka(const std::vector<ReferenceBatch>& batches,
                             const std::string& s, const std::string& t,
                             bool unbiased);

}  // namespace cka::testing

#endif  // CKA_TESTS_E2E_REFERENCE_CKA_H_
