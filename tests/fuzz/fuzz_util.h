// Helpers shared by the fuzz targets and the seed corpus generator: the session
// configurations and limits the targets use, the batch every session starts
// with, the framing of serialised sessions, and a CHECK that libFuzzer reports
// as a crash.
#ifndef CKA_TESTS_FUZZ_FUZZ_UTIL_H_
#define CKA_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cka/core/config.h"
#include "cka/core/session.h"
#include "cka/core/tensor.h"

// Aborts with `what` when `cond` is false: a broken invariant is a finding.
#define FUZZ_CHECK(cond, what)                                              \
  do {                                                                      \
    if (!(cond)) ::cka::fuzz::CheckFailed(__FILE__, __LINE__, #cond, what); \
  } while (false)

namespace cka::fuzz {

[[noreturn]] void CheckFailed(const char* file, int line, const char* cond,
                              const std::string& what);

// Returns limits small enough that one input costs at most milliseconds and a
// few MB (n <= 64, small join buffer, small exact budget), so that the fuzzer
// finds crashes rather than spending its time in Gram products.
core::SessionLimits FuzzLimits();

// One session configuration the batch fuzzer applies every input to.
struct FuzzSessionConfig {
  std::string name;
  core::SessionConfig config;
};
// Returns: "default" (no declared streams, the default measure); "declared"
// (streams "m/a", "m/b", "n/a"; measures linear, exact and rbf); "buckets"
// (step_bucket 10; linear unbiased and biased).
std::vector<FuzzSessionConfig> BatchFuzzConfigs();

// The batch every fuzzed session receives before the fuzz input: source "n",
// batch_id "b1", step 3, layer "a" of 8 × 5 float32 activations. A fuzz input
// from source "m" with batch_id "b1" and 8 rows completes the join of the
// "declared" session. `storage` keeps the bytes the returned view points to.
core::BatchInput BaseBatch(std::vector<float>* storage);

// Returns n × d float32 values that are finite, distinct per row and not
// collinear (valid for every measure), seeded by `seed`.
std::vector<float> SampleActivations(int n, int d, uint32_t seed);

// Returns `bytes` with its last 8 bytes replaced by the FNV-1a-64 hash of what
// precedes them, so that a mutated serialised session gets past the checksum
// and reaches the record decoders. Bytes shorter than 8 are returned as they
// are.
std::string WithFixedChecksum(std::string_view bytes);

// Splits serialised-session bytes ("CKAS", u64 version, u64 count, then
// u64-length-prefixed key and value strings) into records, leniently: the
// header fields are skipped without checks, a repeated key keeps its last
// value, and splitting stops at the first truncated string.
std::map<std::string, std::string> SplitRecords(std::string_view bytes);

}  // namespace cka::fuzz

#endif  // CKA_TESTS_FUZZ_FUZZ_UTIL_H_
