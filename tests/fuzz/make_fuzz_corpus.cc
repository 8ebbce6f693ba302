// Writes the seed corpus of the fuzz targets (README.md):
//   <out>/activation_batch_fuzzer/<name>  serialised cka.v1.ActivationBatch
//   <out>/session_restore_fuzzer/<name>   Session::Serialize() bytes
// Usage: make_fuzz_corpus <out>. Deterministic: the same binary writes the same
// bytes. Exits non-zero when a seed meant to be valid is rejected.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cka/core/session.h"
#include "cka/v1/similarity.pb.h"
#include "fuzz_util.h"
#include "server/proto_convert.h"

namespace cka::fuzz {
namespace {

namespace fs = std::filesystem;

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good(), "cannot write " + path.string());
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()),
                     v.size() * sizeof(T));
}

void AddLayer(v1::ActivationBatch* batch, const std::string& layer,
              std::vector<int64_t> shape, v1::DType dtype, std::string data,
              bool gram = false) {
  v1::LayerActivation* l = batch->add_layers();
  l->set_layer(layer);
  v1::Tensor* t = gram ? l->mutable_gram() : l->mutable_activations();
  for (int64_t s : shape) t->add_shape(s);
  t->set_dtype(dtype);
  t->set_data(std::move(data));
}

void AddF32(v1::ActivationBatch* batch, const std::string& layer, int n, int d,
            uint32_t seed) {
  AddLayer(batch, layer, {n, d}, v1::FLOAT32,
           Bytes(SampleActivations(n, d, seed)));
}

v1::ActivationBatch NewBatch(const std::string& source, const std::string& id,
                             int64_t step) {
  v1::ActivationBatch batch;
  batch.set_session_id("s");
  batch.set_source(source);
  batch.set_batch_id(id);
  batch.set_step(step);
  return batch;
}

struct Seed {
  std::string name;
  v1::ActivationBatch batch;
  bool valid;  // accepted by the "default" fuzz session
};

std::vector<Seed> BatchSeeds() {
  std::vector<Seed> seeds;
  {
    // Completes the join of the "declared" session with the base batch.
    v1::ActivationBatch b = NewBatch("m", "b1", 3);
    AddF32(&b, "a", 8, 5, 1);
    AddF32(&b, "b", 8, 3, 2);
    seeds.push_back({"b1_m_two_layers_f32", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b2", 12);
    std::vector<float> x32 = SampleActivations(8, 6, 3);
    AddLayer(&b, "a", {8, 2, 3}, v1::FLOAT64,
             Bytes(std::vector<double>(x32.begin(), x32.end())));
    // The linear Gram K = X·Xᵀ of 8 × 4 activations.
    const std::vector<float> x = SampleActivations(8, 4, 4);
    std::vector<float> k(64);
    for (int i = 0; i < 8; ++i) {
      for (int j = 0; j < 8; ++j) {
        float s = 0;
        for (int c = 0; c < 4; ++c) s += x[i * 4 + c] * x[j * 4 + c];
        k[i * 8 + j] = s;
      }
    }
    AddLayer(&b, "b", {8, 8}, v1::FLOAT32, Bytes(k), /*gram=*/true);
    seeds.push_back({"b2_m_f64_rank3_and_gram", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b3", 25);
    const std::vector<float> x = SampleActivations(6, 4, 5);
    std::vector<uint16_t> half, bf16;
    for (float v : x) {
      half.push_back(ToHalf(v));
      bf16.push_back(ToBFloat16(v));
    }
    AddLayer(&b, "a", {6, 4}, v1::FLOAT16, Bytes(half));
    AddLayer(&b, "b", {6, 4}, v1::BFLOAT16, Bytes(bf16));
    seeds.push_back({"b3_m_float16_bfloat16", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("", "x/7", -7);
    AddF32(&b, "conv1", 4, 3, 6);
    seeds.push_back({"no_source_single_layer", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("n", "b1", 3);
    AddF32(&b, "a", 8, 5, 7);  // the base batch again: a duplicate
    seeds.push_back({"b1_n_duplicate_of_base", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b1", 3);
    AddF32(&b, "a", 6, 5, 8);  // 6 rows, but the base batch had 8
    seeds.push_back({"b1_m_rows_differ", b, false});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b4", 40);
    std::vector<float> x = SampleActivations(4, 3, 9);
    x[5] = std::numeric_limits<float>::quiet_NaN();
    AddLayer(&b, "a", {4, 3}, v1::FLOAT32, Bytes(x));
    seeds.push_back({"b4_m_nan", b, false});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b5", 41);
    std::vector<float> row = SampleActivations(1, 3, 10);
    std::vector<float> x;
    for (int i = 0; i < 5; ++i) x.insert(x.end(), row.begin(), row.end());
    AddLayer(&b, "a", {5, 3}, v1::FLOAT32, Bytes(x));  // identical rows
    AddF32(&b, "b", 5, 2, 11);
    seeds.push_back({"b5_m_identical_rows", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b6", 42);
    AddF32(&b, "a", 8, 5, 12);
    AddF32(&b, "a", 8, 5, 13);  // the same layer twice
    seeds.push_back({"b6_m_repeated_layer", b, false});
  }
  // One byte of data: the fuzz target synthesizes what the shape needs
  // (SynthesizeData), so these reach the memory pricing.
  {
    v1::ActivationBatch b = NewBatch("m", "b7", 43);
    AddLayer(&b, "a", {8192, 8}, v1::FLOAT32, "\x07");
    seeds.push_back({"b7_m_n8192_synthesized_over_budget", b, false});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b8", 44);
    AddLayer(&b, "a", {1024, 4}, v1::FLOAT32, "\x08");
    AddLayer(&b, "b", {1024, 2, 3}, v1::BFLOAT16, "\x09");
    seeds.push_back({"b8_m_n1024_synthesized", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b9", 45);
    AddLayer(&b, "a", {256, 256}, v1::FLOAT32, "\x0a", /*gram=*/true);
    seeds.push_back({"b9_m_gram_256_synthesized", b, true});
  }
  {
    v1::ActivationBatch b = NewBatch("m", "b10", 46);
    AddLayer(&b, "a", {int64_t{1} << 20, int64_t{1} << 20}, v1::FLOAT16,
             "\x0b");
    seeds.push_back({"b10_m_shape_2p40_one_byte", b, false});
  }
  return seeds;
}

// Ingests `b` as the batch fuzzer does (after SynthesizeData).
absl::StatusOr<core::IngestResult> IngestProto(core::Session& session,
                                               v1::ActivationBatch b) {
  SynthesizeData(&b);
  absl::StatusOr<core::BatchInput> input = server::BatchInputFromProto(b);
  if (!input.ok()) return input.status();
  return session.Ingest(*input);
}

std::unique_ptr<core::Session> NewSession(const core::SessionConfig& config) {
  absl::StatusOr<std::unique_ptr<core::Session>> s =
      core::Session::Create(config, FuzzLimits());
  FUZZ_CHECK(s.ok(), s.status().ToString());
  return *std::move(s);
}

void Ingest(core::Session& session, const v1::ActivationBatch& b) {
  absl::StatusOr<core::IngestResult> r = IngestProto(session, b);
  FUZZ_CHECK(r.ok(), "seed batch '" + b.batch_id() +
                         "' rejected: " + r.status().ToString());
}

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  const fs::path batches_dir = out / "activation_batch_fuzzer";
  const fs::path sessions_dir = out / "session_restore_fuzzer";
  fs::create_directories(batches_dir);
  fs::create_directories(sessions_dir);

  const std::vector<Seed> seeds = BatchSeeds();
  for (const Seed& seed : seeds) {
    auto session = NewSession(core::SessionConfig{});
    std::vector<float> base_storage;
    FUZZ_CHECK(session->Ingest(BaseBatch(&base_storage)).ok(), "base batch");
    const absl::StatusOr<core::IngestResult> result =
        IngestProto(*session, seed.batch);
    FUZZ_CHECK(result.ok() == seed.valid, "seed '" + seed.name +
                                              "' is not what its name says: " +
                                              result.status().ToString());
    WriteFile(batches_dir / seed.name, seed.batch.SerializeAsString());
  }
  auto seed_batch = [&seeds](const std::string& name) {
    for (const Seed& s : seeds) {
      if (s.name == name) return s.batch;
    }
    CheckFailed(__FILE__, __LINE__, "seed_batch", name);
  };

  const std::vector<FuzzSessionConfig> configs = BatchFuzzConfigs();
  std::vector<float> base_storage;
  const core::BatchInput base = BaseBatch(&base_storage);
  {
    auto s = NewSession(configs[0].config);
    WriteFile(sessions_dir / "default_empty", s->Serialize());
    FUZZ_CHECK(s->Ingest(base).ok(), "base");
    Ingest(*s, seed_batch("b1_m_two_layers_f32"));
    Ingest(*s, seed_batch("b2_m_f64_rank3_and_gram"));
    Ingest(*s, seed_batch("no_source_single_layer"));
    WriteFile(sessions_dir / "default_four_batches", s->Serialize());
  }
  {
    // Exact sums from the completed join of b1; b3 waits in the join buffer
    // for n/a.
    auto s = NewSession(configs[1].config);
    FUZZ_CHECK(s->Ingest(base).ok(), "base");
    Ingest(*s, seed_batch("b1_m_two_layers_f32"));
    v1::ActivationBatch b3 = NewBatch("m", "b3", 25);
    AddF32(&b3, "a", 8, 5, 20);
    AddF32(&b3, "b", 8, 3, 21);
    Ingest(*s, b3);
    WriteFile(sessions_dir / "declared_exact_rbf_with_pending", s->Serialize());
  }
  {
    auto s = NewSession(configs[2].config);
    FUZZ_CHECK(s->Ingest(base).ok(), "base");
    Ingest(*s, seed_batch("b1_m_two_layers_f32"));
    Ingest(*s, seed_batch("b2_m_f64_rank3_and_gram"));
    Ingest(*s, seed_batch("b3_m_float16_bfloat16"));
    WriteFile(sessions_dir / "buckets_three_steps", s->Serialize());
  }
  {
    // Declared widths and the debiased exact estimator.
    core::SessionConfig config;
    config.streams = {"p/x", "p/y"};
    config.stream_widths = {4, 2};
    core::Measure m;
    m.name = "exact_debiased";
    m.estimator = core::Estimator::kExactDebiased;
    config.measures = {m};
    auto s = NewSession(config);
    v1::ActivationBatch b = NewBatch("p", "e1", 100);
    AddF32(&b, "x", 6, 4, 30);
    AddF32(&b, "y", 6, 2, 31);
    Ingest(*s, b);
    WriteFile(sessions_dir / "exact_debiased_widths", s->Serialize());
  }
  {
    // Every comparison-family kind beside a minibatch measure in two step
    // buckets: the config's kinds section, the exact sums the kinds read and
    // the standard error's sums of each bucket.
    core::SessionConfig config;
    config.streams = {"q/x", "q/y", "r/z"};
    config.step_bucket = 10;
    core::Measure linear;
    linear.name = "linear";
    config.measures = {linear};
    for (int k = 2; k <= static_cast<int>(core::kLastMeasureKind); ++k) {
      core::Measure m;
      m.kind = static_cast<core::MeasureKind>(k);
      m.name = core::MeasureKindName(m.kind);
      m.estimator = core::Estimator::kExact;
      config.measures.push_back(m);
    }
    auto s = NewSession(config);
    for (int i = 0; i < 3; ++i) {
      v1::ActivationBatch b = NewBatch("q", absl::StrCat("k", i), 5 + 10 * i);
      AddF32(&b, "x", 8, 4, 40 + i);
      AddF32(&b, "y", 8, 3, 50 + i);
      Ingest(*s, b);
      v1::ActivationBatch c = NewBatch("r", absl::StrCat("k", i), 5 + 10 * i);
      AddF32(&c, "z", 8, 2, 60 + i);
      Ingest(*s, c);
    }
    WriteFile(sessions_dir / "moment_kinds_two_buckets", s->Serialize());
  }
  std::printf("wrote %zu batch seeds to %s and 6 session seeds to %s\n",
              seeds.size(), batches_dir.c_str(), sessions_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace cka::fuzz

int main(int argc, char** argv) { return cka::fuzz::Main(argc, argv); }
