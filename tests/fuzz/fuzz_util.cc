#include "fuzz_util.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/src/byte_codec.h"  // the checksum Session::Serialize appends

namespace cka::fuzz {

void CheckFailed(const char* file, int line, const char* cond,
                 const std::string& what) {
  std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", file, line, cond,
               what.c_str());
  std::abort();
}

core::SessionLimits FuzzLimits() {
  core::SessionLimits limits;
  limits.max_streams = 16;
  limits.max_examples = 64;
  limits.max_pending_bytes = int64_t{4} << 20;
  limits.max_pending_batches = 8;
  limits.max_exact_bytes = int64_t{8} << 20;
  limits.dedupe_window = 64;
  return limits;
}

std::vector<FuzzSessionConfig> BatchFuzzConfigs() {
  std::vector<FuzzSessionConfig> configs;
  configs.push_back({"default", core::SessionConfig{}});

  core::SessionConfig declared;
  declared.streams = {"m/a", "m/b", "n/a"};
  core::Measure linear;
  linear.name = "linear";
  core::Measure exact;
  exact.name = "exact";
  exact.estimator = core::Estimator::kExact;
  core::Measure rbf;
  rbf.name = "rbf";
  rbf.kernel = core::Kernel::kRbf;
  rbf.rbf_threshold = 0.5;
  declared.measures = {linear, exact, rbf};
  configs.push_back({"declared", declared});

  core::SessionConfig buckets;
  buckets.step_bucket = 10;
  core::Measure biased;
  biased.name = "biased";
  biased.estimator = core::Estimator::kBiased;
  buckets.measures = {linear, biased};
  configs.push_back({"buckets", buckets});
  return configs;
}

std::vector<float> SampleActivations(int n, int d, uint32_t seed) {
  std::vector<float> x(static_cast<size_t>(n) * d);
  uint32_t state = seed * 2654435761u + 1;
  for (size_t i = 0; i < x.size(); ++i) {
    state = state * 1664525u + 1013904223u;
    // Uniform in [-1, 1) plus a per-row offset so that no two rows are equal.
    x[i] = static_cast<float>(static_cast<int32_t>(state) / 2147483648.0) +
           0.25f * static_cast<float>(i / d);
  }
  return x;
}

core::BatchInput BaseBatch(std::vector<float>* storage) {
  constexpr int kN = 8, kD = 5;
  *storage = SampleActivations(kN, kD, 7);
  core::BatchInput batch;
  batch.source = "n";
  batch.batch_id = "b1";
  batch.step = 3;
  core::LayerInput layer;
  layer.layer = "a";
  layer.tensor.shape = {kN, kD};
  layer.tensor.dtype = core::DType::kFloat32;
  layer.tensor.data = storage->data();
  layer.tensor.size_bytes = storage->size() * sizeof(float);
  batch.layers.push_back(layer);
  return batch;
}

std::string WithFixedChecksum(std::string_view bytes) {
  std::string fixed(bytes);
  if (fixed.size() < 8) return fixed;
  const uint64_t h = core::Fnv1a64(bytes.substr(0, bytes.size() - 8));
  std::memcpy(fixed.data() + fixed.size() - 8, &h, 8);
  return fixed;
}

std::map<std::string, std::string> SplitRecords(std::string_view bytes) {
  std::map<std::string, std::string> records;
  constexpr size_t kHeader = 4 + 8 + 8;  // magic, version, count
  if (bytes.size() < kHeader) return records;
  size_t pos = kHeader;
  auto read_string = [&](std::string* s) {
    uint64_t n;
    if (bytes.size() - pos < 8) return false;
    std::memcpy(&n, bytes.data() + pos, 8);
    pos += 8;
    if (n > bytes.size() - pos) return false;
    s->assign(bytes.data() + pos, n);
    pos += n;
    return true;
  };
  std::string key, value;
  while (read_string(&key) && read_string(&value)) records[key] = value;
  return records;
}

}  // namespace cka::fuzz
