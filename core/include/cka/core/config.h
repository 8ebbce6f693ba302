// Session configuration: which CKA measures a session keeps, which streams it
// expects, and how it buckets training steps. Pure values; no locking is needed
// to read or copy them.
#ifndef CKA_CORE_CONFIG_H_
#define CKA_CORE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cka::core {

// The kernel applied to a stream's activations before HSIC (core/MATH.md,
// "Kernels").
enum class Kernel { kLinear = 1, kRbf = 2 };

// The HSIC/CKA estimator of a measure (core/MATH.md, "HSIC estimators",
// "Minibatch CKA", "Exact feature-space CKA"). kUnbiased and kBiased are
// minibatch estimators (running sums of per-batch HSIC); kExact and
// kExactDebiased are feature-space linear CKA over every row streamed.
enum class Estimator {
  kUnbiased = 1,
  kBiased = 2,
  kExact = 3,
  kExactDebiased = 4
};

// Returns true for kExact and kExactDebiased.
bool IsExact(Estimator estimator);

// What a measure computes (core/MATH.md). kCka is CKA with the measure's kernel
// and estimator. The others are the comparison family, computed from the
// feature-space second moments the exact estimators keep (core/MATH.md,
// "Comparison family from second moments"); they need kernel kLinear,
// estimator kExact and declared streams, and are kept over all steps only.
// kRegressionR2 and kPwcca are asymmetric; in a matrix, entry (row s, column
// t) is the measure with X = s and Y = t: R²(s → t), the share of t's variance
// that the least-squares fit from s explains; and PWCCA weighted by the
// neurons of the side with fewer kept dimensions, s when they tie.
enum class MeasureKind {
  kCka = 1,
  kCcaR2 = 2,         // R²_CCA, the mean squared canonical correlation
  kCcaMeanRho = 3,    // ρ̄_CCA, the mean canonical correlation
  kSvcca = 4,         // SVCCA, 99 % of each side's variance
  kPwcca = 5,         // projection-weighted CCA (asymmetric, see above)
  kRegressionR2 = 6,  // R²(row → column) of a linear fit (asymmetric)
  kProcrustes = 7,  // orthogonal Procrustes similarity ‖Cxy‖_* / √(tr·tr)
};
inline constexpr MeasureKind kLastMeasureKind = MeasureKind::kProcrustes;

// Returns true for every kind but kCka (the comparison family).
bool IsMomentKind(MeasureKind kind);

// Returns "linear"/"rbf" and "unbiased"/"biased"/"exact"/"exact_debiased",
// and "cka"/"cca_r2"/"cca_mean_rho"/"svcca"/"pwcca"/"regression_r2"/
// "procrustes" ("unknown" for a value outside the enum).
const char* KernelName(Kernel kernel);
const char* EstimatorName(Estimator estimator);
const char* MeasureKindName(MeasureKind kind);

// One CKA measure a session maintains.
struct Measure {
  std::string name;  // unique within the session, 1..kMaxNameBytes bytes
  Kernel kernel = Kernel::kLinear;
  // t of core/MATH.md, "Kernels"; > 0 and finite for kRbf, ignored otherwise.
  double rbf_threshold = 0.0;
  Estimator estimator = Estimator::kUnbiased;
  MeasureKind kind = MeasureKind::kCka;

  friend bool operator==(const Measure& a, const Measure& b);
};

// What a session computes. Immutable once the session exists.
struct SessionConfig {
  // In order; the first is the default measure of a query. Empty means
  // DefaultMeasures().
  std::vector<Measure> measures;
  // Declared stream names ("source/layer" or "layer"). Required by the exact
  // estimators; when present, only these streams are accepted and a batch is
  // complete once all have arrived.
  std::vector<std::string> streams;
  // Optional widths (features per example) of the declared streams, same length
  // as `streams` or empty; 0 means "learn from the first batch". Lets session
  // creation check the memory the exact estimators need.
  std::vector<int64_t> stream_widths;
  // Width of a step bucket in training steps; 0 keeps one bucket for all time.
  int64_t step_bucket = 0;
  // Without declared streams: the sources ("source" of source/layer, or "" for
  // layers sent without one) that every batch waits for in the join buffer,
  // so that a source that starts late still pairs with the batches the others
  // sent before. Must be empty when streams are declared.
  std::vector<std::string> expected_sources;
  // Without declared streams: how many of the most recent batch ids keep their
  // kernels in the join buffer once every stream seen (and every expected
  // source) has arrived, so that a stream first seen later still pairs with
  // them. 0 in a request means kDefaultJoinWindow (WithDefaults sets it); it
  // must stay 0 with declared streams, where it does not apply.
  int64_t join_window = 0;

  friend bool operator==(const SessionConfig& a, const SessionConfig& b);
};

// Longest session id, source, layer, batch id or measure name accepted, in
// bytes.
inline constexpr size_t kMaxNameBytes = 256;
// Most measures of one session (each multiplies a batch's kernel work).
inline constexpr size_t kMaxMeasures = 16;
// The join window of a session without declared streams when none is asked
// for, and the largest one accepted.
inline constexpr int64_t kDefaultJoinWindow = 16;
inline constexpr int64_t kMaxJoinWindow = 4096;

// Returns the default measure list: one measure "linear", linear kernel,
// unbiased estimator.
std::vector<Measure> DefaultMeasures();

// Returns `config` with defaults filled in (measures, join_window). Does not
// validate.
SessionConfig WithDefaults(SessionConfig config);

// Returns OK when `config` (after WithDefaults) is usable, else InvalidArgument
// naming the field and value: duplicate or bad names, RBF threshold <= 0, an
// exact measure with an RBF kernel or without declared streams, a kind outside
// the enum, a moment kind with an RBF kernel or an estimator other than
// kExact, widths of the
// wrong count or negative, a negative step bucket, more than kMaxMeasures
// measures, expected sources with declared streams, a join window outside
// 1..kMaxJoinWindow.
absl::Status ValidateConfig(const SessionConfig& config);

// Returns OK when `name` is 1..kMaxNameBytes bytes without control characters,
// else InvalidArgument "<what> '<name>': ...". `what` names the field ("layer",
// "batch_id", ...).
absl::Status ValidateName(const char* what, const std::string& name);

// Returns "source/layer", or "layer" when source is empty.
std::string StreamName(const std::string& source, const std::string& layer);

}  // namespace cka::core

#endif  // CKA_CORE_CONFIG_H_
