#include "ckactl/matrix_format.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ckactl/measure_spec.h"

namespace cka::ckactl {
namespace {

std::string Value(double v, int precision, const char* nan_text) {
  if (std::isnan(v)) return nan_text;
  return absl::StrFormat("%.*f", precision, v);
}

double At(const v1::SimilarityMatrix& m, int i, int j) {
  const int index = i * m.cols_size() + j;
  return index < m.values_size() ? m.values(index) : std::nan("");
}

double StandardErrorAt(const v1::SimilarityMatrix& m, int i, int j) {
  const int index = i * m.cols_size() + j;
  return index < m.standard_errors_size() ? m.standard_errors(index)
                                          : std::nan("");
}

// A table cell: the value, and with `standard_errors` " ± SE" when it has one.
std::string Cell(double v, double se, int precision, bool standard_errors) {
  std::string cell = Value(v, precision, "-");
  if (standard_errors && !std::isnan(v) && !std::isnan(se))
    absl::StrAppend(&cell, " ± ", Value(se, precision, "-"));
  return cell;
}

// Returns the columns `s` takes in a terminal: its UTF-8 code points ("±" is
// two bytes, one column).
size_t DisplayWidth(const std::string& s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (c & 0xC0) != 0x80; });
}

// Returns `s` padded with spaces to `width` columns, on the left (right-
// aligned) or on the right.
std::string Pad(const std::string& s, size_t width, bool left) {
  const std::string fill(width - std::min(width, DisplayWidth(s)), ' ');
  return left ? fill + s : s + fill;
}

// The JSON value of `v`: null for NaN.
nlohmann::json JsonValue(double v) {
  return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v);
}

}  // namespace

std::string FormatTable(const v1::SimilarityMatrix& matrix, int precision,
                        bool standard_errors) {
  size_t name_width = 0;
  for (const std::string& row : matrix.rows())
    name_width = std::max(name_width, DisplayWidth(row));
  std::vector<std::vector<std::string>> cells(matrix.rows_size());
  std::vector<size_t> widths(matrix.cols_size());
  for (int j = 0; j < matrix.cols_size(); ++j)
    widths[j] = DisplayWidth(matrix.cols(j));
  for (int i = 0; i < matrix.rows_size(); ++i) {
    for (int j = 0; j < matrix.cols_size(); ++j) {
      cells[i].push_back(Cell(At(matrix, i, j), StandardErrorAt(matrix, i, j),
                              precision, standard_errors));
      widths[j] = std::max(widths[j], DisplayWidth(cells[i].back()));
    }
  }
  std::string out = std::string(name_width, ' ');
  for (int j = 0; j < matrix.cols_size(); ++j)
    absl::StrAppend(&out, "  ", Pad(matrix.cols(j), widths[j], true));
  out += "\n";
  for (int i = 0; i < matrix.rows_size(); ++i) {
    out += Pad(matrix.rows(i), name_width, false);
    for (int j = 0; j < matrix.cols_size(); ++j)
      absl::StrAppend(&out, "  ", Pad(cells[i][j], widths[j], true));
    out += "\n";
  }
  if (!matrix.note().empty())
    absl::StrAppend(&out, "note: ", matrix.note(), "\n");
  return out;
}

std::string FormatCsv(const v1::SimilarityMatrix& matrix, int precision,
                      bool standard_errors) {
  std::string out = "row";
  for (const std::string& col : matrix.cols()) {
    absl::StrAppend(&out, ",", col);
    if (standard_errors) absl::StrAppend(&out, ",", col, " SE");
  }
  out += "\n";
  for (int i = 0; i < matrix.rows_size(); ++i) {
    out += matrix.rows(i);
    for (int j = 0; j < matrix.cols_size(); ++j) {
      absl::StrAppend(&out, ",", Value(At(matrix, i, j), precision, "nan"));
      if (standard_errors) {
        absl::StrAppend(&out, ",",
                        Value(StandardErrorAt(matrix, i, j), precision, "nan"));
      }
    }
    out += "\n";
  }
  return out;
}

nlohmann::json MatrixJson(const v1::SimilarityMatrix& matrix,
                          bool standard_errors) {
  nlohmann::json values = nlohmann::json::array();
  nlohmann::json batches = nlohmann::json::array();
  nlohmann::json errors = nlohmann::json::array();
  for (int i = 0; i < matrix.rows_size(); ++i) {
    nlohmann::json row = nlohmann::json::array();
    nlohmann::json row_batches = nlohmann::json::array();
    nlohmann::json row_errors = nlohmann::json::array();
    for (int j = 0; j < matrix.cols_size(); ++j) {
      row.push_back(JsonValue(At(matrix, i, j)));
      row_errors.push_back(JsonValue(StandardErrorAt(matrix, i, j)));
      const int index = i * matrix.cols_size() + j;
      row_batches.push_back(
          index < matrix.batches_size() ? matrix.batches(index) : 0);
    }
    values.push_back(std::move(row));
    batches.push_back(std::move(row_batches));
    errors.push_back(std::move(row_errors));
  }
  nlohmann::json out = {{"session_id", matrix.session_id()},
                        {"measure", matrix.measure()},
                        {"rows", std::vector<std::string>(matrix.rows().begin(),
                                                          matrix.rows().end())},
                        {"cols", std::vector<std::string>(matrix.cols().begin(),
                                                          matrix.cols().end())},
                        {"values", std::move(values)},
                        {"batches", std::move(batches)}};
  if (!matrix.note().empty()) out["note"] = matrix.note();
  if (standard_errors) out["standard_errors"] = std::move(errors);
  return out;
}

std::string FormatBlocks(const v1::SimilarityMatrix& matrix, double threshold,
                         double share, int precision) {
  std::string out = absl::StrFormat(
      "blocks (consecutive layers of one source, every pair > %g):\n",
      threshold);
  if (matrix.blocks().empty()) absl::StrAppend(&out, "  no blocks\n");
  for (const v1::LayerBlock& b : matrix.blocks()) {
    absl::StrAppendFormat(&out,
                          "  %s: %s .. %s, %d of %d layers, mean %.*f, "
                          "min %.*f\n",
                          b.source().empty() ? "(no source)" : b.source(),
                          b.first_stream(), b.last_stream(), b.length(),
                          b.source_layers(), precision, b.mean_value(),
                          precision, b.min_value());
  }
  for (const v1::LayerBlock& b : matrix.blocks()) {
    if (!b.warning()) continue;
    absl::StrAppendFormat(
        &out,
        "WARNING: %s: %d of its %d layers (%s .. %s) are near-identical "
        "(every pair > %g), more than %g%% of them: the network may be deeper "
        "than it needs to be\n",
        b.source().empty() ? "(no source)" : b.source(), b.length(),
        b.source_layers(), b.first_stream(), b.last_stream(), threshold,
        100.0 * share);
  }
  return out;
}

std::string FormatBlocksCsv(const v1::SimilarityMatrix& matrix, int precision) {
  std::string out =
      "source,first_stream,last_stream,first_layer,length,source_layers,"
      "mean_value,min_value,warning\n";
  for (const v1::LayerBlock& b : matrix.blocks()) {
    absl::StrAppendFormat(&out, "%s,%s,%s,%d,%d,%d,%.*f,%.*f,%s\n", b.source(),
                          b.first_stream(), b.last_stream(), b.first_layer(),
                          b.length(), b.source_layers(), precision,
                          b.mean_value(), precision, b.min_value(),
                          b.warning() ? "true" : "false");
  }
  return out;
}

nlohmann::json BlocksJson(const v1::SimilarityMatrix& matrix) {
  nlohmann::json out = nlohmann::json::array();
  for (const v1::LayerBlock& b : matrix.blocks()) {
    out.push_back({{"source", b.source()},
                   {"first_stream", b.first_stream()},
                   {"last_stream", b.last_stream()},
                   {"first_layer", b.first_layer()},
                   {"length", b.length()},
                   {"source_layers", b.source_layers()},
                   {"mean_value", b.mean_value()},
                   {"min_value", b.min_value()},
                   {"warning", b.warning()}});
  }
  return out;
}

namespace {

std::string PairLabel(const v1::StreamPair& pair) {
  return absl::StrCat(pair.row(), " vs ", pair.col());
}

double SeriesValue(const v1::SeriesBucket& bucket, int p) {
  return p < bucket.values_size() ? bucket.values(p) : std::nan("");
}

double SeriesStandardError(const v1::SeriesBucket& bucket, int p) {
  return p < bucket.standard_errors_size() ? bucket.standard_errors(p)
                                           : std::nan("");
}

std::string BucketSteps(const v1::SeriesBucket& bucket) {
  if (bucket.step_first() == std::numeric_limits<int64_t>::min() &&
      bucket.step_last() == std::numeric_limits<int64_t>::max()) {
    return "all";
  }
  return absl::StrCat(bucket.step_first(), "..", bucket.step_last());
}

}  // namespace

std::string FormatSeriesTable(const v1::SimilaritySeries& series, int precision,
                              bool standard_errors) {
  std::vector<std::string> header = {"steps"};
  for (const v1::StreamPair& pair : series.pairs())
    header.push_back(PairLabel(pair));
  std::vector<std::vector<std::string>> lines = {header};
  for (const v1::SeriesBucket& bucket : series.buckets()) {
    std::vector<std::string> line = {BucketSteps(bucket)};
    for (int p = 0; p < series.pairs_size(); ++p) {
      line.push_back(Cell(SeriesValue(bucket, p),
                          SeriesStandardError(bucket, p), precision,
                          standard_errors));
    }
    lines.push_back(std::move(line));
  }
  std::vector<size_t> widths(header.size(), 0);
  for (const auto& line : lines) {
    for (size_t c = 0; c < line.size(); ++c)
      widths[c] = std::max(widths[c], DisplayWidth(line[c]));
  }
  std::string out;
  for (const auto& line : lines) {
    out += Pad(line[0], widths[0], false);
    for (size_t c = 1; c < line.size(); ++c)
      absl::StrAppend(&out, "  ", Pad(line[c], widths[c], true));
    out += "\n";
  }
  return out;
}

std::string FormatSeriesCsv(const v1::SimilaritySeries& series, int precision,
                            bool standard_errors) {
  std::string out = "step_first,step_last";
  for (const v1::StreamPair& pair : series.pairs()) {
    absl::StrAppend(&out, ",", PairLabel(pair));
    if (standard_errors) absl::StrAppend(&out, ",", PairLabel(pair), " SE");
  }
  out += "\n";
  for (const v1::SeriesBucket& bucket : series.buckets()) {
    absl::StrAppend(&out, bucket.step_first(), ",", bucket.step_last());
    for (int p = 0; p < series.pairs_size(); ++p) {
      absl::StrAppend(&out, ",",
                      Value(SeriesValue(bucket, p), precision, "nan"));
      if (standard_errors) {
        absl::StrAppend(
            &out, ",", Value(SeriesStandardError(bucket, p), precision, "nan"));
      }
    }
    out += "\n";
  }
  return out;
}

nlohmann::json SeriesJson(const v1::SimilaritySeries& series,
                          bool standard_errors) {
  nlohmann::json pairs = nlohmann::json::array();
  for (const v1::StreamPair& pair : series.pairs())
    pairs.push_back({{"row", pair.row()}, {"col", pair.col()}});
  nlohmann::json buckets = nlohmann::json::array();
  for (const v1::SeriesBucket& bucket : series.buckets()) {
    nlohmann::json values = nlohmann::json::array();
    nlohmann::json errors = nlohmann::json::array();
    for (int p = 0; p < series.pairs_size(); ++p) {
      values.push_back(JsonValue(SeriesValue(bucket, p)));
      errors.push_back(JsonValue(SeriesStandardError(bucket, p)));
    }
    buckets.push_back(
        {{"step_first", bucket.step_first()},
         {"step_last", bucket.step_last()},
         {"values", std::move(values)},
         {"batches", std::vector<int64_t>(bucket.batches().begin(),
                                          bucket.batches().end())}});
    if (standard_errors) buckets.back()["standard_errors"] = std::move(errors);
  }
  return {{"session_id", series.session_id()},
          {"measure", series.measure()},
          {"step_bucket", series.step_bucket()},
          {"pairs", std::move(pairs)},
          {"buckets", std::move(buckets)}};
}

nlohmann::json SessionJson(const v1::Session& session) {
  std::vector<std::string> measures;
  for (const v1::Measure& m : session.config().measures())
    measures.push_back(MeasureSpec(m));
  return {{"session_id", session.session_id()},
          {"measures", measures},
          {"declared_streams",
           std::vector<std::string>(session.config().streams().begin(),
                                    session.config().streams().end())},
          {"step_bucket", session.config().step_bucket()},
          {"expected_sources",
           std::vector<std::string>(session.config().expected_sources().begin(),
                                    session.config().expected_sources().end())},
          {"join_window", session.config().join_window()},
          {"streams", std::vector<std::string>(session.streams().begin(),
                                               session.streams().end())},
          {"batches_applied", session.batches_applied()},
          {"batches_pending", session.batches_pending()},
          {"batches_evicted", session.batches_evicted()},
          {"state_bytes", session.state_bytes()},
          {"pending_bytes", session.pending_bytes()},
          {"pairs_missed", session.pairs_missed()},
          {"held_bytes", session.held_bytes()}};
}

std::string FormatSession(const v1::Session& session) {
  std::vector<std::string> measures;
  for (const v1::Measure& m : session.config().measures())
    measures.push_back(MeasureSpec(m));
  std::string out = absl::StrCat("session ", session.session_id(), "\n");
  absl::StrAppend(&out, "  measures:        ", absl::StrJoin(measures, " "),
                  "\n");
  if (session.config().streams_size() > 0) {
    absl::StrAppend(&out, "  declared:        ",
                    absl::StrJoin(session.config().streams(), " "), "\n");
  }
  absl::StrAppend(&out, "  step bucket:     ", session.config().step_bucket(),
                  "\n");
  if (session.config().expected_sources_size() > 0) {
    absl::StrAppend(&out, "  expected:        ",
                    absl::StrJoin(session.config().expected_sources(), " "),
                    "\n");
  }
  if (session.config().join_window() > 0) {
    absl::StrAppend(&out, "  join window:     ", session.config().join_window(),
                    " batches\n");
  }
  absl::StrAppend(
      &out, "  streams:         ", absl::StrJoin(session.streams(), " "), "\n");
  absl::StrAppend(&out, "  batches applied: ", session.batches_applied(), "\n");
  absl::StrAppend(&out, "  batches pending: ", session.batches_pending(), "\n");
  absl::StrAppend(&out, "  batches evicted: ", session.batches_evicted(), "\n");
  absl::StrAppend(&out, "  state bytes:     ", session.state_bytes(), "\n");
  absl::StrAppend(&out, "  pending bytes:   ", session.pending_bytes(), "\n");
  absl::StrAppend(&out, "  held bytes:      ", session.held_bytes(), "\n");
  absl::StrAppend(&out, "  pairs missed:    ", session.pairs_missed(),
                  session.pairs_missed() > 0
                      ? "  (layers arrived after their batch left the join "
                        "buffer; see README, Joining)\n"
                      : "\n");
  return out;
}

std::string FormatSessionList(const std::vector<v1::Session>& sessions) {
  size_t width = std::string("SESSION").size();
  for (const v1::Session& s : sessions)
    width = std::max(width, s.session_id().size());
  std::string out =
      absl::StrFormat("%-*s  %7s  %8s  %7s  %7s\n", static_cast<int>(width),
                      "SESSION", "STREAMS", "APPLIED", "PENDING", "EVICTED");
  for (const v1::Session& s : sessions) {
    out +=
        absl::StrFormat("%-*s  %7d  %8d  %7d  %7d\n", static_cast<int>(width),
                        s.session_id(), s.streams_size(), s.batches_applied(),
                        s.batches_pending(), s.batches_evicted());
  }
  return out;
}

}  // namespace cka::ckactl
