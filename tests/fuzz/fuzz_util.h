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
#include "cka/core/memory_budget.h"
#include "cka/core/session.h"
#include "cka/core/tensor.h"

// Aborts with `what` when `cond` is false: a broken invariant is a finding.
#define FUZZ_CHECK(cond, what)                                              \
  do {                                                                      \
    if (!(cond)) ::cka::fuzz::CheckFailed(__FILE__, __LINE__, #cond, what); \
  } while (false)

namespace cka::v1 {
class ActivationBatch;
}  // namespace cka::v1

namespace cka::fuzz {

[[noreturn]] void CheckFailed(const char* file, int line, const char* cond,
                              const std::string& what);

// The memory budget every fuzzed session draws from (FuzzLimits().memory):
// kFuzzBudgetBytes, so that a batch of n = 8192 (whose kernels alone need
// 512 MiB) is priced and refused before anything is allocated. A price far
// below what is then allocated shows as an allocation over libFuzzer's
// -malloc_limit_mb. And the budget of the join buffers of all sessions
// (FuzzLimits().join_memory). Both are shared by every input; nothing may stay
// reserved once an input's sessions are gone (CheckBudgetReturned).
inline constexpr int64_t kFuzzBudgetBytes = int64_t{128} << 20;
inline constexpr int64_t kFuzzJoinBudgetBytes = int64_t{48} << 20;
const std::shared_ptr<core::MemoryBudget>& FuzzBudget();
const std::shared_ptr<core::MemoryBudget>& FuzzJoinBudget();
// Aborts unless every byte of both budgets was given back: a reservation that
// outlives its session, batch or query is a finding.
void CheckBudgetReturned();

// Returns limits for the fuzzed sessions: the server's n (up to 8192 examples,
// which only the memory budget bounds), and a small join buffer, exact budget,
// state and stream count, all drawing from FuzzBudget(), so that one input
// costs at most milliseconds and tens of MB, and the fuzzer finds crashes and
// mispriced inputs rather than spending its time in Gram products.
core::SessionLimits FuzzLimits();

// Largest activations or Gram SynthesizeData writes, in bytes: up to n = 8192
// examples of width 8 (float32), or a 256 × 256 float32 Gram.
inline constexpr int64_t kMaxSynthesizedBytes = int64_t{256} << 10;
// Gives every tensor of `batch` that carries exactly one byte of data the data
// its shape and dtype need (finite, distinct rows; a symmetric Gram with a
// positive diagonal), seeded by that byte, when they are at most
// kMaxSynthesizedBytes; larger or malformed shapes keep their one byte. So a
// few bytes of input reach n up to 8192 (and the memory pricing), while shapes
// up to 2^63 with small data reach the validation.
void SynthesizeData(v1::ActivationBatch* batch);

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

// Returns IEEE binary16 and bfloat16 of `f` (binary16: flushed to zero below
// its normal range, the largest finite value above it).
uint16_t ToHalf(float f);
uint16_t ToBFloat16(float f);

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
