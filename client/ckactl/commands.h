// The subcommands of ckactl. Each runs against a Client, writes its result to
// `out` and its errors to `err`, and returns the process exit code: 0 on
// success, 1 when the server or the input said no (the server's message is
// printed).
#ifndef CKA_CLIENT_CKACTL_COMMANDS_H_
#define CKA_CLIENT_CKACTL_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cka/client/client.h"

namespace cka::ckactl {

struct CreateArgs {
  std::string session_id;
  std::vector<std::string> measures;  // specs, see measure_spec.h
  std::vector<std::string> streams;
  int64_t step_bucket = 0;
  std::vector<std::string> expected_sources;
  int64_t join_window = 0;  // 0 = the server's default
  std::string format = "table";
};

struct QueryArgs {
  std::string session_id;
  std::string measure;
  std::vector<std::string> rows;
  std::vector<std::string> cols;
  std::optional<int64_t> step_min;
  std::optional<int64_t> step_max;
  // --blocks: each source's blocks of alike layers at this threshold, and
  // --block-share: the share of a source's layers past which a block warns.
  std::optional<double> block_threshold;
  std::optional<double> block_share;
  std::string format = "table";  // table | csv | json
  int precision = 3;
  bool standard_errors = false;  // --se: print each value's standard error
  // watch only
  int interval_ms = 500;
  int count = 0;  // 0 = until interrupted
};

struct SendArgs {
  std::string session_id;
  std::string source;
  std::string layer;  // for a single file; default: the file stem
  std::string batch_id;
  int64_t step = 0;
  std::vector<std::string> paths;  // .npy files or directories of them
  bool gram = false;               // client-side Gram reduction
};

int RunCreate(client::Client& client, const CreateArgs& args, std::ostream& out,
              std::ostream& err);
int RunList(client::Client& client, const std::string& format,
            std::ostream& out, std::ostream& err);
int RunGet(client::Client& client, const std::string& session_id,
           const std::string& format, std::ostream& out, std::ostream& err);
int RunDelete(client::Client& client, const std::string& session_id,
              std::ostream& out, std::ostream& err);
int RunMatrix(client::Client& client, const QueryArgs& args, std::ostream& out,
              std::ostream& err);
// Prints the series of the pairs (args.rows[i], args.cols[i]); the step range
// is not used.
int RunSeries(client::Client& client, const QueryArgs& args, std::ostream& out,
              std::ostream& err);
int RunWatch(client::Client& client, const QueryArgs& args, std::ostream& out,
             std::ostream& err);
int RunSend(client::Client& client, const SendArgs& args, std::ostream& out,
            std::ostream& err);
int RunHealth(client::Client& client, const std::string& service,
              std::ostream& out, std::ostream& err);

}  // namespace cka::ckactl

#endif  // CKA_CLIENT_CKACTL_COMMANDS_H_
