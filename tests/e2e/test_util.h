// Helpers of the end-to-end tests: an in-process server, deterministic
// activations, .npy files written byte by byte, and subprocesses.
#ifndef CKA_TESTS_E2E_TEST_UTIL_H_
#define CKA_TESTS_E2E_TEST_UTIL_H_

#include <memory>
#include <string>
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

}  // namespace cka::testing

#endif  // CKA_TESTS_E2E_TEST_UTIL_H_
