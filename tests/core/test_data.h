// Test vectors of data/make_vectors.py (the float64 numpy oracle) and helpers
// that feed them to a Session and compare its answers.
//
// Layout: a layer's activations are n × d row-major (element (i, j) at [i * d +
// j]); matrices of expected values are row-major over Scenario::streams, entry
// (s, t) at [s * S + t].
#ifndef CKA_TESTS_CORE_TEST_DATA_H_
#define CKA_TESTS_CORE_TEST_DATA_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cka/core/config.h"
#include "cka/core/session.h"
#include "cka/core/tensor.h"
#include "nlohmann/json.hpp"

namespace cka::core::testing {

// Returns the parsed JSON file `name` of tests/core/data. Aborts the test
// binary when missing.
const nlohmann::json& LoadJson(const std::string& name);

// Returns the bytes of the base64 text `text`.
std::vector<uint8_t> Base64Decode(const std::string& text);

// Returns the bits of `v`, for comparing doubles bit for bit (NaN included).
uint64_t Bits(double v);

struct StreamSpec {
  std::string name;  // "source/layer" or "layer"
  std::string source;
  std::string layer;
  DType dtype = DType::kFloat64;
  std::vector<int64_t> trailing_shape;
  int64_t width = 0;  // product of trailing_shape
};

// One stream's tensor for one batch, with the float64 values the engine should
// see.
struct LayerData {
  std::string stream;
  std::vector<int64_t> shape;  // [n, trailing...]
  DType dtype = DType::kFloat64;
  std::vector<uint8_t> bytes;  // little-endian tensor bytes
  std::vector<double> x;       // n × d decoded values
  std::vector<double> gram;    // n × n linear Gram of x, in float64

  TensorView Activations() const;
  TensorView Gram() const;  // shape [n, n], float64
};

struct BatchData {
  std::string batch_id;
  int64_t step = 0;
  int64_t n = 0;
  std::vector<LayerData>
      layers;  // in Scenario::streams order, absent streams left out
};

// An expected matrix; NaN where the oracle has no value.
struct Expected {
  std::vector<double> values;
  std::vector<int64_t> batches;
};

struct StepRange {
  int64_t step_min = 0;
  int64_t step_max = 0;
  std::map<std::string, Expected> expected;  // by measure name
};

struct Scenario {
  std::vector<StreamSpec> streams;
  std::vector<BatchData> batches;
  std::vector<Measure> measures;
  bool declared = false;
  int64_t step_bucket = 0;
  std::vector<int64_t> stream_widths;  // only where the file gives them
  std::map<std::string, Expected> expected;
  std::vector<StepRange> ranges;

  std::vector<std::string> StreamNames() const;
  const StreamSpec& Stream(const std::string& name) const;
  // The session config: every measure, the streams when declared, the step
  // bucket.
  SessionConfig Config() const;
};

// Returns the scenario in data file `name` (cached; lives for the whole test
// binary).
const Scenario& LoadScenario(const std::string& name);

// The messages of one batch, one per source (as a training job sends them):
// every layer of that source present in `batch`. `as_gram` sends precomputed
// float64 Grams instead.
std::vector<BatchInput> MessagesPerSource(const Scenario& scenario,
                                          const BatchData& batch,
                                          bool as_gram = false);
// The messages of one batch, one per layer.
std::vector<BatchInput> MessagesPerLayer(const Scenario& scenario,
                                         const BatchData& batch);

// Ingests every batch of `scenario` in file order, one message per source;
// fails the test on any error.
void IngestAll(Session& session, const Scenario& scenario,
               bool as_gram = false);

// Returns a new session for `scenario` with every batch ingested.
std::unique_ptr<Session> SessionWithAll(const Scenario& scenario,
                                        bool as_gram = false,
                                        SessionLimits limits = {});

// Returns the query for `measure` with rows = cols = the scenario's streams.
SimilarityQuery FullQuery(const Scenario& scenario, const std::string& measure);

// Returns the query of `measure` over rows × cols (empty: every stream).
SimilarityQuery QueryOf(const std::string& measure,
                        std::vector<std::string> rows = {},
                        std::vector<std::string> cols = {});

// Runs `query`; fails the test (and returns an empty matrix) on error.
SimilarityMatrix QueryOrDie(const Session& session,
                            const SimilarityQuery& query);

// Expects `got` to match `want` entry by entry: NaN exactly where want is NaN,
// equal batch counts, and |got − want| <= abs_tol + rel_tol·|want| elsewhere.
void ExpectMatrixNear(const SimilarityMatrix& got, const Expected& want,
                      double rel_tol, double abs_tol,
                      const std::string& context);
// Expects two matrices to be bit-identical (values, batch counts, rows, cols).
void ExpectMatricesIdentical(const SimilarityMatrix& a,
                             const SimilarityMatrix& b,
                             const std::string& context);
// Expects two matrices to agree within `rel_tol` (relative to the larger
// magnitude, absolute below 1) with NaN in the same places and equal batch
// counts.
void ExpectMatricesNear(const SimilarityMatrix& a, const SimilarityMatrix& b,
                        double rel_tol, const std::string& context);

// Returns every query (each measure, whole session and each step range) of
// `scenario` answered by `session`, in a fixed order, for before/after
// comparisons.
std::vector<SimilarityMatrix> AllAnswers(const Session& session,
                                         const Scenario& scenario);

// Returns a single-stream activations layer of n × d float64 values owned by
// `storage`.
LayerInput DoubleLayer(const std::string& layer, int64_t n, int64_t d,
                       const std::vector<double>& storage);

}  // namespace cka::core::testing

#endif  // CKA_TESTS_CORE_TEST_DATA_H_
