#include "server/file_state_store.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

namespace fs = std::filesystem;

std::string NewTempDir() {
  std::string pattern =
      (fs::path(testing::TempDir()) / "file_state_store_XXXXXX").string();
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

class FileStateStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    absl::StatusOr<std::unique_ptr<FileStateStore>> store =
        FileStateStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string dir_;
  std::unique_ptr<FileStateStore> store_;
};

TEST_F(FileStateStoreTest, PutThenGetReturnsTheSameBytes) {
  const std::string state("binary\0state\xff", 13);
  ASSERT_TRUE(store_->Put("run-1", state).ok());
  absl::StatusOr<std::string> got = store_->Get("run-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, state);
}

TEST_F(FileStateStoreTest, PutReplacesAndLeavesOneFileWithAHexName) {
  ASSERT_TRUE(store_->Put("a/b", "old").ok());
  ASSERT_TRUE(store_->Put("a/b", "new").ok());
  EXPECT_EQ(*store_->Get("a/b"), "new");
  // "a/b" is 61 2f 62: no temporary file is left behind and the id cannot
  // escape the directory.
  EXPECT_EQ(FileNames(dir_),
            (std::vector<std::string>{"612f62.session", "LOCK"}));
}

TEST_F(FileStateStoreTest, ListReturnsEveryIdSortedIncludingOddBytes) {
  const std::string odd("x\0../y", 6);
  ASSERT_TRUE(store_->Put("zeta", "1").ok());
  ASSERT_TRUE(store_->Put("alpha", "2").ok());
  ASSERT_TRUE(store_->Put(odd, "3").ok());
  absl::StatusOr<std::vector<std::string>> ids = store_->List();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<std::string>{"alpha", odd, "zeta"}));
}

TEST_F(FileStateStoreTest, DeleteRemovesTheFileAndIsOkWhenAbsent) {
  ASSERT_TRUE(store_->Put("s", "state").ok());
  ASSERT_TRUE(store_->Delete("s").ok());
  EXPECT_EQ(store_->Get("s").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FileNames(dir_), std::vector<std::string>{"LOCK"});
  EXPECT_TRUE(store_->Delete("s").ok());
}

TEST_F(FileStateStoreTest, GetOfAnUnknownIdIsNotFound) {
  EXPECT_EQ(store_->Get("nobody").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FileStateStoreTest, StateSurvivesReopening) {
  ASSERT_TRUE(store_->Put("s", "state").ok());
  store_.reset();  // releases the directory
  absl::StatusOr<std::unique_ptr<FileStateStore>> reopened =
      FileStateStore::Open(dir_);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Get("s"), "state");
}

TEST_F(FileStateStoreTest,
       OpenRemovesATemporaryFileOfAnInterruptedPutAndKeepsTheOldState) {
  ASSERT_TRUE(store_->Put("s", "committed").ok());
  // What a crash between write and rename leaves: a partial temporary file next
  // to the old one.
  WriteFile(store_->PathFor("s") + ".tmp.123.0", "partial garb");
  store_.reset();  // releases the directory
  absl::StatusOr<std::unique_ptr<FileStateStore>> reopened =
      FileStateStore::Open(dir_);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Get("s"), "committed");
  EXPECT_EQ(FileNames(dir_), (std::vector<std::string>{"73.session", "LOCK"}));
}

struct DamageCase {
  const char* name;
  std::string (*damage)(std::string file);
};

TEST_F(FileStateStoreTest, ASecondStoreOnTheSameDirectoryIsRefused) {
  absl::StatusOr<std::unique_ptr<FileStateStore>> second =
      FileStateStore::Open(dir_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(second.status().message()).find("in use"),
            std::string::npos)
      << second.status();
  store_.reset();
  EXPECT_TRUE(FileStateStore::Open(dir_).ok());
}

TEST_F(FileStateStoreTest, DamagedFileIsDataLossNamingTheFile) {
  const DamageCase cases[] = {
      {"flipped payload byte",
       [](std::string f) {
         f.back() ^= 0x01;
         return f;
       }},
      {"truncated payload",
       [](std::string f) { return f.substr(0, f.size() - 3); }},
      {"truncated header", [](std::string f) { return f.substr(0, 10); }},
      {"empty file", [](std::string) { return std::string(); }},
      {"foreign file",
       [](std::string) {
         return std::string(
             "SQLite format 3\0 and more bytes to pass the header", 50);
       }},
      {"appended bytes", [](std::string f) { return f + "x"; }},
  };
  for (const DamageCase& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(store_->Put("s", "the state of a session").ok());
    const std::string path = store_->PathFor("s");
    WriteFile(path, c.damage(ReadFile(path)));
    absl::StatusOr<std::string> got = store_->Get("s");
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(std::string(got.status().message()).find(path), std::string::npos)
        << got.status();
  }
}

TEST_F(FileStateStoreTest, SessionFileWithANonHexNameMakesListFail) {
  WriteFile(dir_ + "/not-hex.session", "x");
  absl::StatusOr<std::vector<std::string>> ids = store_->List();
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(ids.status().message()).find("not-hex.session"),
            std::string::npos);
}

TEST_F(FileStateStoreTest, OtherFilesInTheDirectoryAreIgnored) {
  WriteFile(dir_ + "/README", "x");
  ASSERT_TRUE(store_->Put("s", "1").ok());
  EXPECT_EQ(*store_->List(), std::vector<std::string>{"s"});
}

TEST(FileStateStoreOpenTest, CreatesMissingDirectoriesAndRejectsAnEmptyPath) {
  const std::string base = NewTempDir();
  const std::string nested = base + "/a/b";
  EXPECT_TRUE(FileStateStore::Open(nested).ok());
  EXPECT_TRUE(fs::is_directory(nested));
  EXPECT_EQ(FileStateStore::Open("").status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteFile(base + "/file", "x");
  EXPECT_EQ(FileStateStore::Open(base + "/file").status().code(),
            absl::StatusCode::kUnavailable);
  fs::remove_all(base);
}

}  // namespace
}  // namespace cka::server
