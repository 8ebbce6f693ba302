// Session::Prepare: a batch's validation and the per-layer kernel pipeline
// (Gram, RBF, centring) and the pairs within the batch, all without the
// session's mutex.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "buffer_cache.h"
#include "cka/core/hsic.h"
#include "cka/core/session.h"
#include "cka/core/thread_pool.h"
#include "prepared_batch.h"
#include "session_state.h"
#include "tensor_convert.h"

namespace cka::core {

namespace {

int64_t MinRows(const SessionConfig& config) {
  for (const Measure& m : config.measures) {
    if (m.estimator == Estimator::kUnbiased) return 4;
  }
  return 2;
}

// Writes the packed centred kernel of the symmetric n × n `k` (upper triangle
// read): U-centred for the unbiased estimator, H·K·H otherwise.
template <typename T>
void Center(const T* k, int64_t n, bool unbiased, double* out) {
  if (unbiased) {
    UCenterPacked(k, n, out);
  } else {
    DoubleCenterPacked(k, n, out);
  }
}

// After a float32 Gram of the n × d activations `x` (of tensor `t`): its
// diagonal is finite exactly when every value is finite and no squared row norm
// overflows float32. Otherwise names the first bad value, or the row.
absl::Status CheckGramDiagonal(const std::string& ctx, const TensorView& t,
                               const float* x, int64_t n, int64_t d,
                               const float* gram) {
  for (int64_t r = 0; r < n; ++r) {
    if (std::isfinite(gram[r * n + r])) continue;
    if (absl::Status s = FirstNonFinite(ctx, x, n * d, d); !s.ok()) return s;
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the squared norm of row %d overflows float32 (its %s values are "
        "too large); scale the activations down",
        ctx, r, DTypeName(t.dtype)));
  }
  return absl::OkStatus();
}

// Writes V·Vᵀ (k × k, symmetric, both triangles) for the k × len row-major
// `v`. With a pool and enough work, the columns are split among its threads and
// the partial products summed (in chunk order, so the result depends only on
// the pool's size).
void PairProducts(const double* v, int k, size_t len, ThreadPool* pool,
                  double* out) {
  constexpr double kMinFlopsPerChunk = 2e6;
  const double flops = static_cast<double>(k) * (k + 1) * len;
  const int chunks =
      pool == nullptr
          ? 1
          : static_cast<int>(std::clamp(flops / kMinFlopsPerChunk, 1.0,
                                        static_cast<double>(pool->size())));
  auto syrk = [&](size_t begin, size_t end, double* c) {
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, k,
                static_cast<int>(end - begin), 1.0, v + begin,
                static_cast<int>(len), 0.0, c, k);
  };
  if (chunks == 1) {
    syrk(0, len, out);
  } else {
    std::vector<std::vector<double>> partial(chunks);
    pool->ParallelFor(chunks, [&](int c) {
      partial[c].resize(static_cast<size_t>(k) * k);
      syrk(len * c / chunks, len * (c + 1) / chunks, partial[c].data());
    });
    for (int i = 0; i < k; ++i) {
      for (int j = i; j < k; ++j) {
        double sum = 0.0;
        for (const std::vector<double>& p : partial) sum += p[i * k + j];
        out[i * k + j] = sum;
      }
    }
  }
  for (int i = 1; i < k; ++i) {
    for (int j = 0; j < i; ++j) out[i * k + j] = out[j * k + i];
  }
}

// Buffers of one layer's Gram work, kept per thread between batches: fresh
// large allocations cost a page fault per 4 KiB and dominated small batches.
// Buffers above kKeepBytes are released after use so that one huge batch does
// not pin memory in every worker.
struct LayerScratch {
  static constexpr size_t kKeepBytes = size_t{64} << 20;
  std::vector<double> gram;       // n × n
  std::vector<float> gram32;      // n × n
  std::vector<double> kernel;     // n × n
  std::vector<float> widened32;   // n × d
  std::vector<double> widened64;  // n × d

  void Trim() {
    TrimOne(gram);
    TrimOne(gram32);
    TrimOne(kernel);
    TrimOne(widened32);
    TrimOne(widened64);
  }
  template <typename T>
  static void TrimOne(std::vector<T>& v) {
    if (v.capacity() * sizeof(T) > kKeepBytes) std::vector<T>().swap(v);
  }
};

// Returns the bytes Prepare allocates for a batch of n examples in layers of
// `widths` features (0 for a Gram) with `measures`
// minibatch measures: the packed kernels and pair products it returns, the
// activations an exact session keeps, and each worker's LayerScratch (a float64
// and a float32 Gram, an RBF kernel, the widened input). Saturates instead of
// overflowing.
int64_t PrepareBytes(int64_t n, const std::vector<int64_t>& widths,
                     const ThreadPool* pool, size_t measures, bool exact) {
  const int64_t k = static_cast<int64_t>(widths.size());
  const int64_t m = static_cast<int64_t>(measures);
  const int64_t n2 = SaturatingMul(n, n);
  int64_t widest = n2;  // a Gram layer widens its n × n values
  int64_t activations = 0;
  for (int64_t d : widths) {
    const int64_t nd = SaturatingMul(n, d);
    widest = std::max(widest, nd);
    if (exact) activations = SaturatingAdd(activations, nd);
  }
  const int64_t threads =
      pool != nullptr && k > 1 ? std::min<int64_t>(k, pool->size()) : 1;
  const int64_t scratch =
      SaturatingAdd(SaturatingMul(n2, 8 + 4 + 8), SaturatingMul(widest, 8));
  int64_t bytes = SaturatingMul(SaturatingMul(k, m), PackedSize(n) * 8);
  bytes = SaturatingAdd(bytes, SaturatingMul(SaturatingMul(k, k), 8 * m));
  bytes = SaturatingAdd(bytes, SaturatingMul(activations, 8));
  return SaturatingAdd(bytes, SaturatingMul(threads, scratch));
}

}  // namespace

absl::StatusOr<PreparedBatch> Session::Prepare(const BatchInput& batch,
                                               ThreadPool* pool) const {
  if (absl::Status s = ValidateName("batch_id", batch.batch_id); !s.ok())
    return s;
  if (!batch.source.empty()) {
    if (absl::Status s = ValidateName("source", batch.source); !s.ok())
      return s;
    if (batch.source.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("source '", batch.source,
                       "' contains '/'; stream names are source/layer"));
    }
  }
  if (batch.layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch '", batch.batch_id, "' has no layers"));
  }
  const bool exact = HasExact(config_);
  const size_t k = batch.layers.size();
  PreparedBatch prepared;
  PreparedBatch::Rep& rep = *prepared.rep_;
  rep.batch_id = batch.batch_id;
  rep.step = batch.step;
  rep.streams.resize(k);
  rep.widths.resize(k);
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < k; ++i) {
    const LayerInput& layer = batch.layers[i];
    if (absl::Status s = ValidateName("layer", layer.layer); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch '", batch.batch_id, "': ", s.message()));
    }
    std::string stream = StreamName(batch.source, layer.layer);
    if (absl::Status s = ValidateName("stream", stream); !s.ok()) return s;
    if (!seen.insert(stream).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch '", batch.batch_id, "': stream '", stream,
                       "' appears twice in one batch"));
    }
    const std::string ctx = LayerContext(stream, batch.batch_id);
    if (!config_.streams.empty() &&
        std::find(config_.streams.begin(), config_.streams.end(), stream) ==
            config_.streams.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          ctx, ": stream '", stream,
          "' is not declared in this session (declared: ",
          absl::StrJoin(config_.streams.begin(),
                        config_.streams.begin() +
                            std::min<size_t>(config_.streams.size(), 8),
                        ", "),
          config_.streams.size() > 8 ? ", ..." : "", ")"));
    }
    absl::StatusOr<int64_t> elements = CheckTensor(ctx, layer);
    if (!elements.ok()) return elements.status();
    const bool gram = layer.kind == LayerInput::Kind::kGram;
    if (gram && exact) {
      return absl::InvalidArgumentError(
          absl::StrCat(ctx,
                       ": a precomputed gram cannot feed this session's exact "
                       "estimators, which need "
                       "the activations"));
    }
    const int64_t n = layer.tensor.shape[0];
    if (i == 0) {
      rep.n = n;
    } else if (n != rep.n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %d rows, but stream '%s' of the same batch has %d rows", ctx, n,
          rep.streams[0], rep.n));
    }
    rep.streams[i] = std::move(stream);
    rep.widths[i] = gram ? 0 : *elements / n;
  }
  const int64_t n = rep.n;
  const int64_t min_rows = MinRows(config_);
  if (n < min_rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch '%s': %d examples, but the session's %s estimator needs at "
        "least %d",
        rep.batch_id, n,
        min_rows == 4 ? "unbiased"
                      : EstimatorName(config_.measures.front().estimator),
        min_rows));
  }
  if (n > limits_.max_examples) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "batch '%s': %d examples, more than the limit of %d examples per batch",
        rep.batch_id, n, limits_.max_examples));
  }

  const std::vector<int> measures = MinibatchMeasures(config_);
  if (limits_.memory != nullptr) {
    absl::StatusOr<MemoryBudget::Reservation> work = limits_.memory->Reserve(
        PrepareBytes(n, rep.widths, pool, measures.size(), exact),
        absl::StrFormat("batch '%s' (%d layers of %d "
                        "examples, %d measures)",
                        rep.batch_id, k, n, measures.size()));
    if (!work.ok()) return work.status();
    rep.work = *std::move(work);
  }
  const size_t n2 = static_cast<size_t>(n * n);
  const size_t packed = static_cast<size_t>(PackedSize(n));
  rep.kernels.resize(measures.size());
  for (auto& kernels : rep.kernels)
    kernels = BufferCache::Global().Take(k * packed);
  rep.pairs.assign(measures.size(), std::vector<double>(k * k));
  if (exact) rep.activations.resize(k);
  std::vector<absl::Status> errors(k);

  // The float64 Gram is needed for RBF kernels; float32 activations of a
  // linear-only session are centred straight from the float32 Gram.
  const bool needs_gram64 = std::any_of(
      measures.begin(), measures.end(),
      [&](int m) { return config_.measures[m].kernel == Kernel::kRbf; });
  auto compute_layer = [&](int i, LayerScratch& scratch) {
    const LayerInput& layer = batch.layers[i];
    const std::string ctx = LayerContext(rep.streams[i], rep.batch_id);
    std::vector<double>& gram = scratch.gram;
    const float* gram32 = nullptr;  // set on the float32 path
    // The float64 Gram: every path but float32 activations of a linear-only
    // session fills it.
    if (layer.kind == LayerInput::Kind::kGram || exact ||
        layer.tensor.dtype == DType::kFloat64 || needs_gram64) {
      gram.resize(n2);
    }
    if (layer.kind == LayerInput::Kind::kGram) {
      std::vector<double>& g = scratch.widened64;
      if (absl::Status s = Widen(ctx, layer.tensor, n * n, n, &g); !s.ok()) {
        errors[i] = s;
        return;
      }
      double max_abs = 0.0;
      for (double v : g) max_abs = std::max(max_abs, std::abs(v));
      const double tol = 1e-5 * max_abs;
      for (int64_t r = 0; r < n; ++r) {
        if (g[r * n + r] < 0) {
          errors[i] = absl::InvalidArgumentError(
              absl::StrFormat("%s: gram diagonal entry (%d, %d) is %g < 0; a "
                              "linear gram X·Xᵀ has a "
                              "non-negative diagonal",
                              ctx, r, r, g[r * n + r]));
          return;
        }
        for (int64_t c = r + 1; c < n; ++c) {
          const double a = g[r * n + c], b = g[c * n + r];
          if (std::abs(a - b) > tol) {
            errors[i] = absl::InvalidArgumentError(
                absl::StrFormat("%s: gram is not symmetric: entry (%d, %d) = "
                                "%g but (%d, %d) = %g (tolerance "
                                "1e-5 of the largest entry, %g)",
                                ctx, r, c, a, c, r, b, tol));
            return;
          }
          gram[r * n + c] = gram[c * n + r] = 0.5 * (a + b);
        }
        gram[r * n + r] = g[r * n + r];
      }
    } else {
      const int64_t d = rep.widths[i];
      const TensorView& t = layer.tensor;
      if (exact) {
        std::vector<double>& x = rep.activations[i];
        if (absl::Status s = Widen(ctx, t, n * d, d, &x); !s.ok()) {
          errors[i] = s;
          return;
        }
        LinearGram(x.data(), n, d, gram.data());
      } else if (t.dtype == DType::kFloat64) {
        std::vector<double>& x = scratch.widened64;
        if (absl::Status s = Widen(ctx, t, n * d, d, &x); !s.ok()) {
          errors[i] = s;
          return;
        }
        LinearGram(x.data(), n, d, gram.data());
      } else {
        // float32 Grams: float32 BLAS is twice as fast and keeps 1e-6 relative
        // accuracy of CKA.
        scratch.gram32.resize(n2);
        const float* x = nullptr;
        if (t.dtype == DType::kFloat32 &&
            reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0) {
          x = static_cast<const float*>(t.data);  // no copy
        } else {
          if (absl::Status s = Widen(ctx, t, n * d, d, &scratch.widened32);
              !s.ok()) {
            errors[i] = s;
            return;
          }
          x = scratch.widened32.data();
        }
        LinearGramUpper(x, n, d, scratch.gram32.data());
        // A NaN or Inf anywhere in row r makes K(r, r) = Σ x² non-finite, and
        // |K(r, s)| <= sqrt(K(r, r)·K(s, s)): checking the diagonal checks
        // every input value without another pass over them.
        if (absl::Status s =
                CheckGramDiagonal(ctx, t, x, n, d, scratch.gram32.data());
            !s.ok()) {
          errors[i] = s;
          return;
        }
        gram32 = scratch.gram32.data();
        if (needs_gram64) SymmetrizeUpper(gram32, n, gram.data());
      }
    }
    for (size_t m = 0; m < measures.size(); ++m) {
      const Measure& measure = config_.measures[measures[m]];
      double* out = rep.kernels[m].data() + i * packed;
      const bool unbiased = measure.estimator == Estimator::kUnbiased;
      if (measure.kernel == Kernel::kRbf) {
        std::vector<double>& kernel = scratch.kernel;
        kernel.resize(n2);
        if (absl::Status s =
                RbfKernel(gram.data(), n, measure.rbf_threshold, kernel.data());
            !s.ok()) {
          errors[i] = absl::InvalidArgumentError(absl::StrCat(
              ctx, ": measure '", measure.name, "': ", s.message()));
          return;
        }
        Center(kernel.data(), n, unbiased, out);
      } else if (gram32 != nullptr) {
        Center(gram32, n, unbiased, out);
      } else {
        Center(gram.data(), n, unbiased, out);
      }
    }
  };
  auto work = [&](int i) {
    thread_local LayerScratch scratch;
    compute_layer(i, scratch);
    scratch.Trim();
  };
  if (pool != nullptr && k > 1) {
    pool->ParallelFor(static_cast<int>(k), work);
  } else {
    for (size_t i = 0; i < k; ++i) work(static_cast<int>(i));
  }
  for (const absl::Status& s : errors) {
    if (!s.ok()) return s;
  }
  // Every pair of this message's layers at once: V·Vᵀ with V the k × n(n+1)/2
  // stacked packed kernels (core/MATH.md, "Fast form").
  for (size_t m = 0; m < measures.size(); ++m) {
    PairProducts(rep.kernels[m].data(), static_cast<int>(k), packed, pool,
                 rep.pairs[m].data());
  }
  return prepared;
}

}  // namespace cka::core
