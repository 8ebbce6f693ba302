// The delta-method standard error of a minibatch CKA entry from running sums
// over its common batches (core/MATH.md, "Standard error of a minibatch CKA
// entry").
//
// Per batch b of the pair's common batches: a_b = HSIC(K_s, K_t),
// u_b = HSIC(K_s, K_s), v_b = HSIC(K_t, K_t). The sums are additive: sums of
// disjoint batch sets (step buckets, servers) add field by field.
#ifndef CKA_CORE_MEASURES_CKA_STANDARD_ERROR_H_
#define CKA_CORE_MEASURES_CKA_STANDARD_ERROR_H_

#include <cstdint>

namespace cka::core {

struct CkaBatchSums {
  int64_t batches = 0;  // m
  double sum_a = 0;     // Σ a_b
  double sum_u = 0;     // Σ u_b
  double sum_v = 0;     // Σ v_b
  double sum_aa = 0;    // Σ a_b²
  double sum_uu = 0;    // Σ u_b²
  double sum_vv = 0;    // Σ v_b²
  double sum_au = 0;    // Σ a_b·u_b
  double sum_av = 0;    // Σ a_b·v_b
  double sum_uv = 0;    // Σ u_b·v_b

  // Adds one batch's values.
  void Add(double a, double u, double v);
  // Adds the sums of a disjoint set of batches.
  void Merge(const CkaBatchSums& other);
};

// Returns the CKA entry ā/√(ū·v̄) of the sums; NaN when m = 0, ū <= 0 or
// v̄ <= 0.
double CkaOfSums(const CkaBatchSums& s);

// Returns SE(CKA) = √(∇ᵀ·Σ·∇ / m), with Σ the sample covariance (divisor
// m − 1) of (a_b, u_b, v_b) and ∇ the gradient of ā/√(ū·v̄). NaN when m < 2,
// ū <= 0 or v̄ <= 0; a quadratic form that rounding makes negative gives 0.
// Pure function, thread-safe.
double CkaStandardError(const CkaBatchSums& s);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_CKA_STANDARD_ERROR_H_
