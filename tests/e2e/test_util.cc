#include "test_util.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace cka::testing {

std::unique_ptr<server::Server> StartServer(int max_message_mb) {
  server::ServerOptions options;
  options.max_message_mb = max_message_mb;
  return StartServer(options);
}

std::unique_ptr<server::Server> StartServer(server::ServerOptions options) {
  options.listen = "127.0.0.1:0";
  options.threads = 2;
  options.shutdown_grace = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<server::Server>> server =
      server::Server::BuildAndStart(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::unique_ptr<client::Client> ConnectClient(int port) {
  client::ClientOptions options;
  options.server = absl::StrCat("127.0.0.1:", port);
  options.default_deadline = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<client::Client>> c =
      client::Client::Create(options);
  EXPECT_TRUE(c.ok()) << c.status();
  return *std::move(c);
}

Activations RandomActivations(int n, int d, unsigned seed,
                              const Activations* base, double mix) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Activations a;
  a.n = n;
  a.d = d;
  a.x.resize(static_cast<size_t>(n) * d);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) {
      double v = normal(rng);
      if (base != nullptr && j < base->d) v += mix * base->x[i * base->d + j];
      a.x[i * d + j] = v;
    }
  }
  return a;
}

std::vector<float> ToFloat(const Activations& a) {
  return {a.x.begin(), a.x.end()};
}

Activations RoundToFloat(const Activations& a) {
  Activations out = a;
  for (double& v : out.x) v = static_cast<float>(v);
  return out;
}

void WriteNpy(const std::string& path, const Activations& a, bool as_float32) {
  std::string header = absl::StrCat("{'descr': '", as_float32 ? "<f4" : "<f8",
                                    "', 'fortran_order': False, 'shape': (",
                                    a.n, ", ", a.d, "), }");
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(header.size() & 0xff),
                       static_cast<char>(header.size() >> 8)};
  out.write(len, 2);
  out << header;
  if (as_float32) {
    const std::vector<float> f = ToFloat(a);
    out.write(reinterpret_cast<const char*>(f.data()),
              f.size() * sizeof(float));
  } else {
    out.write(reinterpret_cast<const char*>(a.x.data()),
              a.x.size() * sizeof(double));
  }
  ASSERT_TRUE(out.good()) << path;
}

Subprocess::Subprocess(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return;
  }
  // Built before fork: the child of a threaded process may only make
  // async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close(out_pipe[0]);
    close(err_pipe[0]);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  out_fd_ = out_pipe[0];
  err_fd_ = err_pipe[0];
}

ProcessResult Subprocess::Wait() {
  ProcessResult result;
  if (pid_ <= 0) return result;
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buffer[4096];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t got = read(fds[i].fd, buffer, sizeof(buffer));
      if (got > 0) {
        sinks[i]->append(buffer, static_cast<size_t>(got));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  waitpid(pid_, &status, 0);
  result.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  pid_ = -1;
  return result;
}

ProcessResult RunProcess(const std::vector<std::string>& argv) {
  return Subprocess(argv).Wait();
}

std::string MakeTempDir(const std::string& name) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/cka_e2e_", getpid(), "_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string StorageName(const ::testing::TestParamInfo<Storage>& info) {
  return info.param == Storage::kMemory ? "memory" : "data_dir";
}

std::string MakeTestDataDir() {
  const ::testing::TestInfo* test =
      ::testing::UnitTest::GetInstance()->current_test_info();
  return MakeTempDir(absl::StrReplaceAll(
      absl::StrCat(test->test_suite_name(), ".", test->name()), {{"/", "_"}}));
}

std::map<std::string, StoredRecords> ReadStoredSessions(
    const std::string& data_dir) {
  std::map<std::string, StoredRecords> sessions;
  // The file name and tables of server/sqlite_state_store.h.
  const std::string path = data_dir + "/ckad.db";
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  // A busy WAL index (ckad checkpointing) is waited for, not reported.
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(db, 10000);
  auto read = [&](const char* sql, auto&& row) {
    sqlite3_stmt* stmt = nullptr;
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
    while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      auto column = [stmt](int i) {
        const char* bytes =
            static_cast<const char*>(sqlite3_column_blob(stmt, i));
        return std::string(bytes == nullptr ? "" : bytes,
                           static_cast<size_t>(sqlite3_column_bytes(stmt, i)));
      };
      row(column);
      rc = SQLITE_OK;
    }
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(stmt);
  };
  // One transaction, so both tables come from the same commit.
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  read("SELECT session_id FROM sessions",
       [&](auto column) { sessions[column(0)]; });
  read("SELECT session_id, key, value FROM records",
       [&](auto column) { sessions[column(0)][column(1)] = column(2); });
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  EXPECT_EQ(rc, SQLITE_OK) << "reading '" << path << "': " << sqlite3_errstr(rc)
                           << " (" << (db != nullptr ? sqlite3_errmsg(db) : "")
                           << ")";
  sqlite3_close(db);
  return sessions;
}

std::string DescribeStoredDifference(
    const std::map<std::string, StoredRecords>& before,
    const std::map<std::string, StoredRecords>& after, int max_lines) {
  std::vector<std::string> lines;
  auto all_ids = [&] {
    std::map<std::string, int> ids;
    for (const auto& [id, records] : before) ids[id] |= 1;
    for (const auto& [id, records] : after) ids[id] |= 2;
    return ids;
  };
  for (const auto& [id, where] : all_ids()) {
    if (where == 1) {
      lines.push_back(absl::StrCat("session '", id, "' removed"));
      continue;
    }
    if (where == 2) {
      lines.push_back(absl::StrCat("session '", id, "' added"));
      continue;
    }
    const StoredRecords& b = before.at(id);
    const StoredRecords& a = after.at(id);
    std::map<std::string, int> keys;
    for (const auto& [key, value] : b) keys[key] |= 1;
    for (const auto& [key, value] : a) keys[key] |= 2;
    for (const auto& [key, in] : keys) {
      if (in == 3 && b.at(key) == a.at(key)) continue;
      lines.push_back(absl::StrCat(
          "session '", id, "' record '", absl::CEscape(key), "' ",
          in == 1   ? absl::StrCat("removed (", b.at(key).size(), " bytes)")
          : in == 2 ? absl::StrCat("added (", a.at(key).size(), " bytes)")
                    : absl::StrCat("changed (", b.at(key).size(), " → ",
                                   a.at(key).size(), " bytes)")));
    }
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (static_cast<int>(i) == max_lines) {
      absl::StrAppend(&out, "... and ", lines.size() - i, " more\n");
      break;
    }
    absl::StrAppend(&out, lines[i], "\n");
  }
  return out;
}

v1::GetSimilaritySeriesRequest SeriesRequest(
    const std::string& session_id,
    const std::vector<std::pair<std::string, std::string>>& pairs) {
  v1::GetSimilaritySeriesRequest request;
  request.set_session_id(session_id);
  for (const auto& [row, col] : pairs) {
    v1::StreamPair* pair = request.add_pairs();
    pair->set_row(row);
    pair->set_col(col);
  }
  return request;
}

}  // namespace cka::testing
