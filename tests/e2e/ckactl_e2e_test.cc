// The real ckactl binary against the real server in-process: every subcommand,
// its output formats and its exit codes.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cka/client/client.h"
#include "nlohmann/json.hpp"
#include "reference_cka.h"
#include "test_util.h"

namespace cka::testing {
namespace {

class CkactlE2eTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    dir_ = MakeTempDir(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  ProcessResult Ckactl(std::vector<std::string> args) {
    args.insert(args.begin(), {CKACTL_BINARY, "--server",
                               absl::StrCat("127.0.0.1:", server_->port()),
                               "--timeout", "20"});
    return RunProcess(args);
  }

  // Writes batch `b`'s layers of model "m" as <dir>/b<b>/<layer>.npy (float32)
  // and returns the directory.
  std::string WriteBatch(int b, std::vector<ReferenceBatch>* batches) {
    const std::string batch_dir = absl::StrCat(dir_, "/b", b);
    std::filesystem::create_directories(batch_dir);
    const Activations x = RandomActivations(10, 6, 900 + b);
    const Activations y = RandomActivations(10, 4, 950 + b, &x, 1.0);
    WriteNpy(batch_dir + "/conv.npy", x, /*as_float32=*/true);
    WriteNpy(batch_dir + "/fc.npy", y, /*as_float32=*/true);
    batches->push_back(
        {{"m/conv", RoundToFloat(x)}, {"m/fc", RoundToFloat(y)}});
    return batch_dir;
  }

  std::string dir_;
};

TEST_F(CkactlE2eTest, CreateSendMatrixGetListDeleteRoundTrip) {
  ProcessResult r =
      Ckactl({"create", "exp", "--measure", "lin:linear:unbiased", "--measure",
              "rbf05:rbf:biased:0.5", "--step-bucket", "100"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("rbf05:rbf:biased:0.5"), std::string::npos) << r.out;
  // Idempotent; another config for the same id is the server's ALREADY_EXISTS.
  EXPECT_EQ(
      Ckactl({"create", "exp", "--measure", "lin:linear:unbiased", "--measure",
              "rbf05:rbf:biased:0.5", "--step-bucket", "100"})
          .exit_code,
      0);
  r = Ckactl({"create", "exp", "--measure", "lin:linear:biased"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("ALREADY_EXISTS"), std::string::npos) << r.err;

  std::vector<ReferenceBatch> batches;
  for (int b = 0; b < 2; ++b) {
    const std::string batch_dir = WriteBatch(b, &batches);
    r = Ckactl({"send", "--session", "exp", "--source", "m", "--batch-id",
                absl::StrCat("b", b), "--step", absl::StrCat(b * 10),
                batch_dir});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("conv, fc"), std::string::npos) << r.out;
  }
  // Sending b0 again is acked as a duplicate and changes nothing.
  r = Ckactl({"send", "--session", "exp", "--source", "m", "--batch-id", "b0",
              absl::StrCat(dir_, "/b0")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("duplicate"), std::string::npos) << r.out;

  r = Ckactl({"matrix", "exp", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["measure"], "lin");
  ASSERT_EQ(j["rows"].size(), 2u);
  v1::GetSimilarityRequest query;
  query.set_session_id("exp");
  absl::StatusOr<v1::SimilarityMatrix> direct = client_->GetSimilarity(query);
  ASSERT_TRUE(direct.ok()) << direct.status();
  for (int i = 0; i < 2; ++i) {
    for (int k = 0; k < 2; ++k) {
      // JSON prints doubles with round-trip precision.
      EXPECT_EQ(j["values"][i][k].get<double>(), direct->values(i * 2 + k));
      EXPECT_EQ(j["batches"][i][k].get<int64_t>(), 2);
      const double reference =
          ReferenceMinibatchCka(batches, j["rows"][i], j["cols"][k], true);
      // float32 activations, float32 Grams on the server: 1e-6 relative
      // (core/MATH.md, "Properties").
      EXPECT_NEAR(j["values"][i][k].get<double>(), reference,
                  1e-6 * std::abs(reference));
    }
  }

  r = Ckactl({"matrix", "exp", "--format", "csv", "--precision", "4", "--rows",
              "m/fc", "--cols", "m/conv,m/fc"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines =
      absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[0], "row,m/conv,m/fc");
  EXPECT_EQ(lines[1], absl::StrFormat("m/fc,%.4f,1.0000", direct->values(2)));

  r = Ckactl({"matrix", "exp", "--measure", "rbf05", "--step-min", "0",
              "--step-max", "99"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("measure rbf05"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("m/conv"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1.000"), std::string::npos) << r.out;

  r = Ckactl({"get", "exp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("batches applied: 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("state bytes:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("state bytes:     0\n"), std::string::npos) << r.out;
  r = Ckactl({"list", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)[0]["session_id"], "exp");
  r = Ckactl({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("exp"), std::string::npos);

  r = Ckactl({"watch", "exp", "--count", "1", "--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("row,m/conv,m/fc"), std::string::npos) << r.out;

  EXPECT_EQ(Ckactl({"delete", "exp"}).exit_code, 0);
  r = Ckactl({"get", "exp"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  EXPECT_EQ(Ckactl({"delete", "exp"}).exit_code, 1);
}

TEST_F(CkactlE2eTest, SeriesPrintsEachBucketAsGetSimilaritySeriesAnswers) {
  ProcessResult r = Ckactl({"create", "run", "--measure", "lin:linear:unbiased",
                            "--step-bucket", "10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<ReferenceBatch> batches;
  for (int b = 0; b < 2; ++b) {
    r = Ckactl({"send", "--session", "run", "--source", "m", "--batch-id",
                absl::StrCat("b", b), "--step", absl::StrCat(b * 10),
                WriteBatch(b, &batches)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const v1::GetSimilaritySeriesRequest request =
      SeriesRequest("run", {{"m/conv", "m/fc"}, {"m/fc", "m/fc"}});
  absl::StatusOr<v1::SimilaritySeries> direct =
      client_->GetSimilaritySeries(request);
  ASSERT_TRUE(direct.ok()) << direct.status();
  ASSERT_EQ(direct->buckets_size(), 2);

  r = Ckactl({"series", "run", "--rows", "m/conv,m/fc", "--cols", "m/fc,m/fc",
              "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["measure"], "lin");
  EXPECT_EQ(j["step_bucket"], 10);
  ASSERT_EQ(j["pairs"].size(), 2u);
  EXPECT_EQ(j["pairs"][0]["row"], "m/conv");
  EXPECT_EQ(j["pairs"][0]["col"], "m/fc");
  ASSERT_EQ(j["buckets"].size(), 2u);
  for (int b = 0; b < 2; ++b) {
    const v1::SeriesBucket& want = direct->buckets(b);
    EXPECT_EQ(j["buckets"][b]["step_first"], want.step_first());
    EXPECT_EQ(j["buckets"][b]["step_last"], want.step_last());
    for (int p = 0; p < 2; ++p) {
      // JSON prints doubles with round-trip precision.
      EXPECT_EQ(j["buckets"][b]["values"][p].get<double>(), want.values(p));
      EXPECT_EQ(j["buckets"][b]["batches"][p], 1);
    }
  }

  r = Ckactl({"series", "run", "--rows", "m/conv", "--cols", "m/fc", "--format",
              "csv", "--precision", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines =
      absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0], "step_first,step_last,m/conv vs m/fc");
  EXPECT_EQ(lines[1],
            absl::StrFormat("0,9,%.5f", direct->buckets(0).values(0)));
  EXPECT_EQ(lines[2],
            absl::StrFormat("10,19,%.5f", direct->buckets(1).values(0)));

  r = Ckactl({"series", "run", "--rows", "m/conv", "--cols", "m/fc"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("step bucket 10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("10..19"), std::string::npos) << r.out;

  r = Ckactl({"series", "run", "--rows", "m/conv,m/fc", "--cols", "m/fc"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("2 rows and 1 cols"), std::string::npos) << r.err;
  r = Ckactl({"series", "run", "--rows", "m/conv", "--cols", "m/none"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
}

TEST_F(CkactlE2eTest, StandardErrorOptionPrintsTheServersStandardErrors) {
  ProcessResult r = Ckactl({"create", "se", "--measure", "lin:linear:unbiased",
                            "--step-bucket", "10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<ReferenceBatch> batches;
  for (int b = 0; b < 4; ++b) {  // steps 0, 5 | 10, 15: two per bucket
    r = Ckactl({"send", "--session", "se", "--source", "m", "--batch-id",
                absl::StrCat("b", b), "--step", absl::StrCat(b * 5),
                WriteBatch(b, &batches)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  v1::GetSimilarityRequest query;
  query.set_session_id("se");
  absl::StatusOr<v1::SimilarityMatrix> direct = client_->GetSimilarity(query);
  ASSERT_TRUE(direct.ok()) << direct.status();
  ASSERT_EQ(direct->standard_errors_size(), 4);
  const double se = direct->standard_errors(1);  // m/conv × m/fc
  ASSERT_GT(se, 0.0);

  r = Ckactl({"matrix", "se", "--se", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["rows"][0], "m/conv");
  // JSON prints doubles with round-trip precision.
  EXPECT_EQ(j["standard_errors"][0][1].get<double>(), se);
  EXPECT_EQ(j["standard_errors"][1][0].get<double>(),
            direct->standard_errors(2));
  r = Ckactl({"matrix", "se", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(nlohmann::json::parse(r.out).contains("standard_errors"));

  r = Ckactl({"matrix", "se", "--se", "--format", "csv", "--precision", "4",
              "--rows", "m/conv", "--cols", "m/fc"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines =
      absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[0], "row,m/fc,m/fc SE");
  EXPECT_EQ(lines[1],
            absl::StrFormat("m/conv,%.4f,%.4f", direct->values(1), se));

  r = Ckactl({"matrix", "se", "--se"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(absl::StrFormat("%.3f ± %.3f", direct->values(1), se)),
            std::string::npos)
      << r.out;
  r = Ckactl({"matrix", "se"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("±"), std::string::npos) << r.out;

  const v1::GetSimilaritySeriesRequest request =
      SeriesRequest("se", {{"m/conv", "m/fc"}});
  absl::StatusOr<v1::SimilaritySeries> series =
      client_->GetSimilaritySeries(request);
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_EQ(series->buckets_size(), 2);
  r = Ckactl({"series", "se", "--rows", "m/conv", "--cols", "m/fc", "--se",
              "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  for (int b = 0; b < 2; ++b) {
    EXPECT_GT(series->buckets(b).standard_errors(0), 0.0);
    EXPECT_EQ(j["buckets"][b]["standard_errors"][0].get<double>(),
              series->buckets(b).standard_errors(0));
  }
  r = Ckactl({"series", "se", "--rows", "m/conv", "--cols", "m/fc", "--se",
              "--format", "csv", "--precision", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0], "step_first,step_last,m/conv vs m/fc,m/conv vs m/fc SE");
  EXPECT_EQ(lines[2],
            absl::StrFormat("10,19,%.5f,%.5f", series->buckets(1).values(0),
                            series->buckets(1).standard_errors(0)));
  r = Ckactl({"series", "se", "--rows", "m/conv", "--cols", "m/fc", "--se"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(
      r.out.find(absl::StrFormat("%.3f ± %.3f", series->buckets(0).values(0),
                                 series->buckets(0).standard_errors(0))),
      std::string::npos)
      << r.out;
}

TEST_F(CkactlE2eTest, ErrorsPrintTheMessageAndExitNonZero) {
  ASSERT_EQ(Ckactl({"create", "e"}).exit_code, 0);
  // A bad measure spec never reaches the server.
  ProcessResult r = Ckactl({"create", "e2", "--measure", "x:cosine"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cosine"), std::string::npos) << r.err;
  // An unsupported .npy dtype is named.
  {
    std::ofstream out(dir_ + "/ints.npy", std::ios::binary);
    std::string header =
        "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    out.write("\x93NUMPY\x01\x00", 8);
    out.put(static_cast<char>(header.size()));
    out.put(0);
    out << header << std::string(16, '\0');
  }
  r = Ckactl({"send", "--session", "e", "--batch-id", "b", dir_ + "/ints.npy"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'<i4'"), std::string::npos) << r.err;
  // A batch the server rejects: NaN activations, with the server's message.
  Activations nan = RandomActivations(6, 3, 1);
  nan.x[4] = std::nan("");
  WriteNpy(dir_ + "/nan.npy", nan);
  r = Ckactl({"send", "--session", "e", "--batch-id", "b", "--layer", "fc",
              dir_ + "/nan.npy"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  // Unknown session.
  r = Ckactl({"matrix", "absent"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  // Usage errors are CLI11's (non-zero, not 1).
  EXPECT_NE(Ckactl({"matrix"}).exit_code, 0);
}

TEST_F(CkactlE2eTest, HealthPrintsServingAndFailsWhenNothingListens) {
  ProcessResult r = Ckactl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
  r = RunProcess(
      {CKACTL_BINARY, "--server", "127.0.0.1:1", "--timeout", "2", "health"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("UNAVAILABLE"), std::string::npos) << r.err;
}

TEST_F(CkactlE2eTest, MatrixBlocksListsRunsOfAlikeLayersAndWarns) {
  ProcessResult r =
      Ckactl({"create", "deep", "--measure", "lin:linear:unbiased"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Model m: l1, l2, l3 are noisy copies of one signal, l0 and l4 independent;
  // files sort by name, so the layers are first seen in that order.
  for (int b = 0; b < 3; ++b) {
    const std::string batch_dir = absl::StrCat(dir_, "/b", b);
    std::filesystem::create_directories(batch_dir);
    const Activations signal = RandomActivations(24, 5, 700 + 10 * b);
    for (int l = 0; l < 5; ++l) {
      const bool copy = l >= 1 && l <= 3;
      WriteNpy(absl::StrCat(batch_dir, "/l", l, ".npy"),
               RandomActivations(24, 5, 701 + 10 * b + l,
                                 copy ? &signal : nullptr, 20.0));
    }
    r = Ckactl({"send", "--session", "deep", "--source", "m", "--batch-id",
                absl::StrCat("b", b), batch_dir});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  r = Ckactl({"matrix", "deep", "--rows", "m/l0", "--cols", "m/l4", "--blocks",
              "0.9", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["values"].size(), 1u);
  v1::GetSimilarityRequest query;
  query.set_session_id("deep");
  query.set_block_threshold(0.9);
  absl::StatusOr<v1::SimilarityMatrix> direct = client_->GetSimilarity(query);
  ASSERT_TRUE(direct.ok()) << direct.status();
  ASSERT_EQ(direct->blocks_size(), 1) << direct->DebugString();
  const v1::LayerBlock& b = direct->blocks(0);
  EXPECT_EQ(b.first_stream(), "m/l1");
  EXPECT_EQ(b.last_stream(), "m/l3");
  EXPECT_TRUE(b.warning()) << "3 of 5 layers";
  ASSERT_EQ(j["blocks"].size(), 1u) << r.out;
  EXPECT_EQ(j["blocks"][0]["source"], "m");
  EXPECT_EQ(j["blocks"][0]["first_stream"], "m/l1");
  EXPECT_EQ(j["blocks"][0]["last_stream"], "m/l3");
  EXPECT_EQ(j["blocks"][0]["length"], 3);
  EXPECT_EQ(j["blocks"][0]["source_layers"], 5);
  EXPECT_EQ(j["blocks"][0]["mean_value"].get<double>(), b.mean_value());
  EXPECT_EQ(j["blocks"][0]["min_value"].get<double>(), b.min_value());
  EXPECT_EQ(j["blocks"][0]["warning"], true);
  // With --se too: both.
  r = Ckactl({"matrix", "deep", "--blocks", "0.9", "--se", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json both = nlohmann::json::parse(r.out);
  EXPECT_TRUE(both.contains("standard_errors")) << r.out;
  EXPECT_EQ(both["blocks"], j["blocks"]) << r.out;

  r = Ckactl({"matrix", "deep", "--blocks", "0.9", "--precision", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(absl::StrFormat(
                "  m: m/l1 .. m/l3, 3 of 5 layers, mean %.4f, min %.4f\n",
                b.mean_value(), b.min_value())),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("WARNING: m: 3 of its 5 layers (m/l1 .. m/l3)"),
            std::string::npos)
      << r.out;
  // 3 layers are not more than 0.6 of 5: the block, no warning.
  r = Ckactl({"matrix", "deep", "--blocks", "0.9", "--block-share", "0.6"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("m: m/l1 .. m/l3"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("WARNING"), std::string::npos) << r.out;
  r = Ckactl({"matrix", "deep", "--blocks", "0.9", "--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\nsource,first_stream,last_stream,first_layer,length,"
                       "source_layers,mean_value,min_value,warning\n"
                       "m,m/l1,m/l3,1,3,5,"),
            std::string::npos)
      << r.out;
  // Above every value: no blocks. Out of range: the server's message.
  r = Ckactl({"matrix", "deep", "--blocks", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no blocks"), std::string::npos) << r.out;
  r = Ckactl({"matrix", "deep", "--blocks", "1.5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("block_threshold 1.5"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cka::testing
