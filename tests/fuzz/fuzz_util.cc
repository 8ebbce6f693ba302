#include "fuzz_util.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cka/v1/similarity.pb.h"
#include "core/src/byte_codec.h"  // the checksum Session::Serialize appends

namespace cka::fuzz {

void CheckFailed(const char* file, int line, const char* cond,
                 const std::string& what) {
  std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", file, line, cond,
               what.c_str());
  std::abort();
}

const std::shared_ptr<core::MemoryBudget>& FuzzBudget() {
  static const auto* const budget = new std::shared_ptr<core::MemoryBudget>(
      std::make_shared<core::MemoryBudget>(
          kFuzzBudgetBytes, "the fuzz memory budget (kFuzzBudgetBytes)"));
  return *budget;
}

const std::shared_ptr<core::MemoryBudget>& FuzzJoinBudget() {
  static const auto* const budget = new std::shared_ptr<core::MemoryBudget>(
      std::make_shared<core::MemoryBudget>(
          kFuzzJoinBudgetBytes,
          "the fuzz join-buffer budget (kFuzzJoinBudgetBytes)"));
  return *budget;
}

void CheckBudgetReturned() {
  for (const auto* budget : {&FuzzBudget(), &FuzzJoinBudget()}) {
    const int64_t used = (*budget)->used();
    FUZZ_CHECK(used == 0, std::to_string(used) + " bytes of " +
                              (*budget)->name() +
                              " are still reserved after the input's "
                              "sessions are gone");
  }
}

core::SessionLimits FuzzLimits() {
  core::SessionLimits limits;
  limits.max_streams = 16;
  limits.max_examples = 8192;
  limits.max_pending_bytes = int64_t{16} << 20;
  limits.max_pending_batches = 8;
  limits.max_exact_bytes = int64_t{8} << 20;
  limits.dedupe_window = 64;
  limits.max_state_bytes = int64_t{8} << 20;
  limits.max_buckets = 64;
  limits.memory = FuzzBudget();
  limits.join_memory = FuzzJoinBudget();
  return limits;
}

uint16_t ToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = (x >> 13) & 0x3ffu;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7bffu);  // largest
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) |
                               mant);
}

uint16_t ToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<uint16_t>(x >> 16);
}

namespace {

// Returns `values` as the bytes of `dtype` (FLOAT32, FLOAT64, FLOAT16 or
// BFLOAT16).
std::string Encode(const std::vector<float>& values, v1::DType dtype) {
  std::string bytes;
  auto append = [&bytes](const void* p, size_t n) {
    bytes.append(static_cast<const char*>(p), n);
  };
  for (float v : values) {
    switch (dtype) {
      case v1::FLOAT64: {
        const double d = v;
        append(&d, 8);
        break;
      }
      case v1::FLOAT16: {
        const uint16_t h = ToHalf(v);
        append(&h, 2);
        break;
      }
      case v1::BFLOAT16: {
        const uint16_t h = ToBFloat16(v);
        append(&h, 2);
        break;
      }
      default:
        append(&v, 4);
        break;
    }
  }
  return bytes;
}

}  // namespace

void SynthesizeData(v1::ActivationBatch* batch) {
  for (v1::LayerActivation& layer : *batch->mutable_layers()) {
    if (!layer.has_gram() && !layer.has_activations()) continue;
    const bool gram = layer.has_gram();
    v1::Tensor* t = gram ? layer.mutable_gram() : layer.mutable_activations();
    if (t->data().size() != 1 || t->shape_size() == 0) continue;
    int64_t width = 0;
    switch (t->dtype()) {
      case v1::FLOAT32:
        width = 4;
        break;
      case v1::FLOAT64:
        width = 8;
        break;
      case v1::FLOAT16:
      case v1::BFLOAT16:
        width = 2;
        break;
      default:
        continue;
    }
    int64_t elements = 1;
    for (int64_t d : t->shape()) {
      if (d <= 0 || __builtin_mul_overflow(elements, d, &elements)) {
        elements = -1;
        break;
      }
    }
    if (elements <= 0 || elements > kMaxSynthesizedBytes / width) continue;
    const uint32_t seed = static_cast<unsigned char>(t->data()[0]);
    const int n = static_cast<int>(t->shape(0));
    const int d = static_cast<int>(elements / n);
    std::vector<float> values;
    if (gram) {
      if (t->shape_size() != 2 || t->shape(1) != n) continue;
      // K = X·Xᵀ of n × 3 activations: symmetric (the same products summed in
      // the same order for (i, j) and (j, i)) with a positive diagonal.
      const std::vector<float> x = SampleActivations(n, 3, seed);
      values.resize(static_cast<size_t>(n) * n);
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
          float s = 0;
          for (int c = 0; c < 3; ++c) s += x[i * 3 + c] * x[j * 3 + c];
          values[static_cast<size_t>(i) * n + j] = s;
        }
      }
    } else {
      values = SampleActivations(n, d, seed);
    }
    t->set_data(Encode(values, t->dtype()));
  }
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
