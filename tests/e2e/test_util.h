// Helpers of the end-to-end tests: an in-process server, deterministic
// activations, .npy files written byte by byte, and subprocesses.
#ifndef CKA_TESTS_E2E_TEST_UTIL_H_
#define CKA_TESTS_E2E_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cka/client/client.h"
#include "cka/server/server.h"
#include "reference_cka.h"

namespace cka::testing {

// Starts the real server on 127.0.0.1:0 with a small worker pool; fails the
// test on error.
std::unique_ptr<server::Server> StartServer(int max_message_mb = 64);
// The same with `options`, of which it replaces the address, the worker count
// and the shutdown grace.
std::unique_ptr<server::Server> StartServer(server::ServerOptions options);
// Returns a client of 127.0.0.1:`port`.
std::unique_ptr<client::Client> ConnectClient(int port);

// A test with the real server in-process (StartServer()) and a client of it.
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer();
    ASSERT_NE(server_, nullptr);
    client_ = ConnectClient(server_->port());
  }
  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown();
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<client::Client> client_;
};

// Returns the GetSimilaritySeries request of session `session_id` for
// `pairs` (row, col), with the session's first measure.
v1::GetSimilaritySeriesRequest SeriesRequest(
    const std::string& session_id,
    const std::vector<std::pair<std::string, std::string>>& pairs);

// Returns n × d activations: a seeded standard normal matrix, optionally plus
// `mix` times the first min(d, base.d) columns of `base` (to make streams
// similar).
Activations RandomActivations(int n, int d, unsigned seed,
                              const Activations* base = nullptr,
                              double mix = 0.0);
// Returns the activations as float32 values (row-major) and back as float64
// (what the server sees when float32 is sent).
std::vector<float> ToFloat(const Activations& a);
Activations RoundToFloat(const Activations& a);

// Writes a version 1.0 .npy file of `a` as '<f8' (or '<f4' when `as_float32`).
void WriteNpy(const std::string& path, const Activations& a,
              bool as_float32 = false);

// A finished subprocess.
struct ProcessResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs `argv` (argv[0] a path) to completion.
ProcessResult RunProcess(const std::vector<std::string>& argv);
// Starts `argv` in the background; Wait returns its result.
class Subprocess {
 public:
  explicit Subprocess(const std::vector<std::string>& argv);
  ProcessResult Wait();

 private:
  int pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
};

// Returns a fresh empty directory under the test temporary directory.
std::string MakeTempDir(const std::string& name);

// Where a value-parameterised end-to-end test keeps ckad's state: in memory
// only, or also in a --data-dir (ServerOptions::data_dir) of its own.
enum class Storage { kMemory, kDataDir };
// Returns "memory" or "data_dir": the test name suffix for `info`.
std::string StorageName(const ::testing::TestParamInfo<Storage>& info);
// Returns a fresh empty directory named after the running test (suite, name
// and parameter), for its --data-dir.
std::string MakeTestDataDir();

// A stored session's records, key → value (server/sqlite_state_store.h).
using StoredRecords = std::map<std::string, std::string>;
// Returns every session stored in `<data_dir>/ckad.db`, id → records, read
// over a read-only SQLite connection of its own, which the WAL journal allows
// while ckad holds the database. It sees what is committed: a batch acked OK,
// or a session answered by CreateSession (even an existing one: that answer
// waits until every change the session had is written). Fails the test (and
// returns what it read) when the database cannot be read.
std::map<std::string, StoredRecords> ReadStoredSessions(
    const std::string& data_dir);
// Returns what differs between two results of ReadStoredSessions, one line
// per session or record added, removed or changed (at most `max_lines`);
// empty when they are equal.
std::string DescribeStoredDifference(
    const std::map<std::string, StoredRecords>& before,
    const std::map<std::string, StoredRecords>& after, int max_lines = 20);

}  // namespace cka::testing

#endif  // CKA_TESTS_E2E_TEST_UTIL_H_
