#include "ckactl/commands.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cka/client/activation_streamer.h"
#include "ckactl/matrix_format.h"
#include "ckactl/measure_spec.h"
#include "npy_reader.h"

namespace cka::ckactl {
namespace {

int Fail(std::ostream& err, const absl::Status& status) {
  err << "error: " << absl::StatusCodeToString(status.code()) << ": "
      << status.message() << "\n";
  return 1;
}

v1::GetSimilarityRequest MakeQuery(const QueryArgs& args) {
  v1::GetSimilarityRequest query;
  query.set_session_id(args.session_id);
  query.set_measure(args.measure);
  for (const std::string& r : args.rows) query.add_rows(r);
  for (const std::string& c : args.cols) query.add_cols(c);
  if (args.step_min) query.set_step_min(*args.step_min);
  if (args.step_max) query.set_step_max(*args.step_max);
  if (args.block_threshold) query.set_block_threshold(*args.block_threshold);
  if (args.block_share) query.set_block_warn_share(*args.block_share);
  return query;
}

void PrintMatrix(const v1::SimilarityMatrix& matrix, const QueryArgs& args,
                 std::ostream& out) {
  // With --blocks, each format adds the blocks after the matrix.
  const bool blocks = args.block_threshold.has_value();
  if (args.format == "json") {
    nlohmann::json json = MatrixJson(matrix, args.standard_errors);
    if (blocks) json["blocks"] = BlocksJson(matrix);
    out << json.dump() << "\n";
  } else if (args.format == "csv") {
    out << FormatCsv(matrix, args.precision, args.standard_errors);
    if (blocks) out << "\n" << FormatBlocksCsv(matrix, args.precision);
  } else {
    out << "session " << matrix.session_id() << ", measure " << matrix.measure()
        << "\n"
        << FormatTable(matrix, args.precision, args.standard_errors);
    if (blocks) {
      out << FormatBlocks(matrix, *args.block_threshold,
                          args.block_share.value_or(0.5), args.precision);
    }
  }
  out.flush();
}

// Returns (layer name, path) for every .npy file of `paths`; a directory
// contributes its
// *.npy files, sorted by name.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> CollectLayers(
    const SendArgs& args) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> layers;
  for (const std::string& path : args.paths) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      std::vector<fs::path> files;
      for (const fs::directory_entry& entry :
           fs::directory_iterator(path, ec)) {
        if (entry.is_regular_file() && entry.path().extension() == ".npy") {
          files.push_back(entry.path());
        }
      }
      if (ec)
        return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
      std::sort(files.begin(), files.end());
      if (files.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": no .npy files in directory"));
      }
      for (const fs::path& f : files)
        layers.emplace_back(f.stem().string(), f.string());
    } else {
      layers.emplace_back(fs::path(path).stem().string(), path);
    }
  }
  if (layers.empty())
    return absl::InvalidArgumentError("send: no .npy files given");
  if (!args.layer.empty()) {
    if (layers.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--layer names a single layer, but ", layers.size(),
                       " files were given; without --layer each file's stem is "
                       "its layer name"));
    }
    layers[0].first = args.layer;
  }
  return layers;
}

v1::DType WireDType(client::NpyArray::DType dtype) {
  switch (dtype) {
    case client::NpyArray::DType::kFloat64:
      return v1::FLOAT64;
    case client::NpyArray::DType::kFloat16:
      return v1::FLOAT16;
    case client::NpyArray::DType::kFloat32:
      break;
  }
  return v1::FLOAT32;
}

}  // namespace

int RunCreate(client::Client& client, const CreateArgs& args, std::ostream& out,
              std::ostream& err) {
  v1::SessionConfig config;
  for (const std::string& spec : args.measures) {
    absl::StatusOr<v1::Measure> measure = ParseMeasureSpec(spec);
    if (!measure.ok()) return Fail(err, measure.status());
    *config.add_measures() = *measure;
  }
  for (const std::string& s : args.streams) config.add_streams(s);
  config.set_step_bucket(args.step_bucket);
  for (const std::string& s : args.expected_sources)
    config.add_expected_sources(s);
  config.set_join_window(args.join_window);
  absl::StatusOr<v1::Session> session =
      client.CreateSession(args.session_id, config);
  if (!session.ok()) return Fail(err, session.status());
  if (args.format == "json") {
    out << SessionJson(*session).dump() << "\n";
  } else {
    out << FormatSession(*session);
  }
  return 0;
}

int RunList(client::Client& client, const std::string& format,
            std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<v1::Session>> sessions = client.ListSessions();
  if (!sessions.ok()) return Fail(err, sessions.status());
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::Session& s : *sessions) list.push_back(SessionJson(s));
    out << list.dump() << "\n";
  } else {
    out << FormatSessionList(*sessions);
  }
  return 0;
}

int RunGet(client::Client& client, const std::string& session_id,
           const std::string& format, std::ostream& out, std::ostream& err) {
  absl::StatusOr<v1::Session> session = client.GetSession(session_id);
  if (!session.ok()) return Fail(err, session.status());
  if (format == "json") {
    out << SessionJson(*session).dump() << "\n";
  } else {
    out << FormatSession(*session);
  }
  return 0;
}

int RunDelete(client::Client& client, const std::string& session_id,
              std::ostream& out, std::ostream& err) {
  absl::Status status = client.DeleteSession(session_id);
  if (!status.ok()) return Fail(err, status);
  out << "deleted session " << session_id << "\n";
  return 0;
}

int RunMatrix(client::Client& client, const QueryArgs& args, std::ostream& out,
              std::ostream& err) {
  absl::StatusOr<v1::SimilarityMatrix> matrix =
      client.GetSimilarity(MakeQuery(args));
  if (!matrix.ok()) return Fail(err, matrix.status());
  PrintMatrix(*matrix, args, out);
  return 0;
}

int RunSeries(client::Client& client, const QueryArgs& args, std::ostream& out,
              std::ostream& err) {
  if (args.rows.size() != args.cols.size()) {
    return Fail(err, absl::InvalidArgumentError(absl::StrCat(
                         "--rows and --cols: ", args.rows.size(), " rows and ",
                         args.cols.size(),
                         " cols; pair i is the i-th row with the i-th col")));
  }
  v1::GetSimilaritySeriesRequest request;
  request.set_session_id(args.session_id);
  request.set_measure(args.measure);
  for (size_t i = 0; i < args.rows.size(); ++i) {
    v1::StreamPair* pair = request.add_pairs();
    pair->set_row(args.rows[i]);
    pair->set_col(args.cols[i]);
  }
  absl::StatusOr<v1::SimilaritySeries> series =
      client.GetSimilaritySeries(request);
  if (!series.ok()) return Fail(err, series.status());
  if (args.format == "json") {
    out << SeriesJson(*series, args.standard_errors).dump() << "\n";
  } else if (args.format == "csv") {
    out << FormatSeriesCsv(*series, args.precision, args.standard_errors);
  } else {
    out << "session " << series->session_id() << ", measure "
        << series->measure() << ", step bucket " << series->step_bucket()
        << "\n"
        << FormatSeriesTable(*series, args.precision, args.standard_errors);
  }
  out.flush();
  return 0;
}

int RunWatch(client::Client& client, const QueryArgs& args, std::ostream& out,
             std::ostream& err) {
  v1::WatchSimilarityRequest request;
  *request.mutable_query() = MakeQuery(args);
  request.set_min_interval_ms(args.interval_ms);
  int seen = 0;
  absl::Status status =
      client.WatchSimilarity(request, [&](const v1::SimilarityMatrix& m) {
        if (args.format == "table" && seen > 0) out << "\n";
        PrintMatrix(m, args, out);
        ++seen;
        return args.count <= 0 || seen < args.count;
      });
  if (!status.ok()) return Fail(err, status);
  return 0;
}

int RunSend(client::Client& client, const SendArgs& args, std::ostream& out,
            std::ostream& err) {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> layers =
      CollectLayers(args);
  if (!layers.ok()) return Fail(err, layers.status());
  client::Batch batch(args.batch_id, args.step);
  for (auto& [layer, path] : *layers) {
    absl::StatusOr<client::NpyArray> array = client::ReadNpyFile(path);
    if (!array.ok()) return Fail(err, array.status());
    if (array->shape.size() < 2) {
      return Fail(err,
                  absl::InvalidArgumentError(absl::StrCat(
                      path, ": rank ", array->shape.size(),
                      " array; activations need rank >= 2 (examples first)")));
    }
    const v1::DType dtype = WireDType(array->dtype);
    batch.AddActivations(layer, std::move(array->data), std::move(array->shape),
                         dtype);
  }

  client::StreamerOptions options;
  options.session_id = args.session_id;
  options.source = args.source;
  options.reduce_to_gram = args.gram;
  absl::StatusOr<std::unique_ptr<client::ActivationStreamer>> streamer =
      client::ActivationStreamer::Create(client, options);
  if (!streamer.ok()) return Fail(err, streamer.status());
  absl::Status submitted = (*streamer)->Submit(std::move(batch));
  if (!submitted.ok()) return Fail(err, submitted);
  absl::StatusOr<std::vector<client::BatchError>> errors =
      (*streamer)->Close(absl::Now() + client.options().default_deadline);
  if (!errors.ok()) return Fail(err, errors.status());
  if (!errors->empty()) {
    for (const client::BatchError& e : *errors) {
      err << "error: batch '" << e.batch_id
          << "': " << absl::StatusCodeToString(e.code) << ": " << e.message
          << "\n";
    }
    return 1;
  }
  const client::StreamerStats stats = (*streamer)->stats();
  std::vector<std::string> names;
  for (const auto& [layer, path] : *layers) names.push_back(layer);
  out << "batch '" << args.batch_id << "' (" << names.size()
      << (names.size() == 1 ? " layer: " : " layers: ")
      << absl::StrJoin(names, ", ") << ")"
      << (args.source.empty() ? "" : absl::StrCat(" from '", args.source, "'"))
      << ": "
      << (stats.duplicates > 0 ? "acked as duplicate (already applied)"
                               : "acked")
      << "\n";
  return 0;
}

int RunHealth(client::Client& client, const std::string& service,
              std::ostream& out, std::ostream& err) {
  absl::StatusOr<client::ServingStatus> status = client.Health(service);
  if (!status.ok()) return Fail(err, status.status());
  out << client::ServingStatusName(*status) << "\n";
  return *status == client::ServingStatus::kServing ? 0 : 1;
}

}  // namespace cka::ckactl
