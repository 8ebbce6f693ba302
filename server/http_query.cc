#include "server/http_query.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cka::server {
namespace {

// Longest part of a value quoted in an error: a URI may be kilobytes long.
constexpr size_t kQuotedBytes = 64;

std::string Quoted(const std::string& value) {
  if (value.size() <= kQuotedBytes) return absl::StrCat("'", value, "'");
  return absl::StrCat("'", value.substr(0, kQuotedBytes), "...' (",
                      value.size(), " bytes)");
}

absl::Status BadParameter(const std::string& name, const std::string& value,
                          const char* expected) {
  return absl::InvalidArgumentError(absl::StrCat(
      "query parameter ", name, "=", Quoted(value), ": expected ", expected));
}

// Reads `value` of parameter `name` as a decimal integer of type T.
template <typename T>
absl::StatusOr<T> ParseInteger(const std::string& name,
                               const std::string& value, const char* type) {
  T n = 0;
  if (!absl::SimpleAtoi(value, &n)) {
    return BadParameter(name, value, type);
  }
  return n;
}

// Fills `request` from the parameters of a similarity query; `extra` is the
// one more parameter the caller reads itself (or null).
absl::Status ReadSimilarityQuery(const std::string& session_id,
                                 const QueryParams& params, const char* extra,
                                 v1::GetSimilarityRequest* request) {
  request->set_session_id(session_id);
  for (const char* single : {"measure", "step_min", "step_max",
                             "block_threshold", "block_share", extra}) {
    if (single != nullptr && params.count(single) > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter ", single, ": given ",
                       params.count(single), " times; expected at most once"));
    }
  }
  for (const auto& [name, value] : params) {
    if (name == "measure") {
      request->set_measure(value);
    } else if (name == "rows") {
      request->add_rows(value);
    } else if (name == "cols") {
      request->add_cols(value);
    } else if (name == "step_min" || name == "step_max") {
      absl::StatusOr<int64_t> step =
          ParseInteger<int64_t>(name, value, "a decimal int64");
      if (!step.ok()) return step.status();
      if (name == "step_min") {
        request->set_step_min(*step);
      } else {
        request->set_step_max(*step);
      }
    } else if (name == "block_threshold" || name == "block_share") {
      // The range is the service's to judge (over gRPC too); here only the
      // syntax.
      double x = 0.0;
      if (!absl::SimpleAtod(value, &x)) {
        return BadParameter(name, value, "a decimal number in (0, 1]");
      }
      if (name == "block_threshold") {
        request->set_block_threshold(x);
      } else {
        request->set_block_warn_share(x);
      }
    } else if (extra == nullptr || name != extra) {
      return absl::InvalidArgumentError(absl::StrCat(
          "query parameter ", Quoted(name), ": unknown; expected ",
          absl::StrJoin({"measure", "rows", "cols", "step_min", "step_max",
                         "block_threshold", "block_share"},
                        ", "),
          extra != nullptr ? absl::StrCat(", ", extra) : ""));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::GetSimilarityRequest> SimilarityRequestFromQuery(
    const std::string& session_id, const QueryParams& params) {
  v1::GetSimilarityRequest request;
  absl::Status read =
      ReadSimilarityQuery(session_id, params, nullptr, &request);
  if (!read.ok()) return read;
  return request;
}

absl::StatusOr<v1::WatchSimilarityRequest> WatchRequestFromQuery(
    const std::string& session_id, const QueryParams& params) {
  constexpr char kInterval[] = "min_interval_ms";
  v1::WatchSimilarityRequest request;
  absl::Status read = ReadSimilarityQuery(session_id, params, kInterval,
                                          request.mutable_query());
  if (!read.ok()) return read;
  auto it = params.find(kInterval);
  if (it != params.end()) {
    absl::StatusOr<int32_t> interval =
        ParseInteger<int32_t>(kInterval, it->second, "a decimal int32");
    if (!interval.ok()) return interval.status();
    request.set_min_interval_ms(*interval);
  }
  return request;
}

absl::StatusOr<v1::GetSimilaritySeriesRequest> SeriesRequestFromQuery(
    const std::string& session_id, const QueryParams& params) {
  v1::GetSimilaritySeriesRequest request;
  request.set_session_id(session_id);
  if (params.count("measure") > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("query parameter measure: given ", params.count("measure"),
                     " times; expected at most once"));
  }
  std::vector<std::string> rows, cols;
  for (const auto& [name, value] : params) {
    if (name == "measure") {
      request.set_measure(value);
    } else if (name == "row") {
      rows.push_back(value);
    } else if (name == "col") {
      cols.push_back(value);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter ", Quoted(name),
                       ": unknown; expected measure, row, col"));
    }
  }
  if (rows.size() != cols.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "query parameters row and col: ", rows.size(), " rows and ",
        cols.size(), " cols; pair i is the i-th row with the i-th col"));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    v1::StreamPair* pair = request.add_pairs();
    pair->set_row(rows[i]);
    pair->set_col(cols[i]);
  }
  return request;
}

}  // namespace cka::server
