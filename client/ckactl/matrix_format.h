// Text renderings of a SimilarityMatrix, a SimilaritySeries and of sessions
// for ckactl: an aligned
// table, CSV and JSON. NaN (no value) prints as "-" in tables, "nan" in CSV and
// null in JSON. With `standard_errors`, each value's standard error (NaN: none)
// prints beside it: "value ± SE" in a table cell (a value without one prints
// alone), a column "<column> SE" after each column in CSV, and
// "standard_errors" shaped as "values" in JSON.
#ifndef CKA_CLIENT_CKACTL_MATRIX_FORMAT_H_
#define CKA_CLIENT_CKACTL_MATRIX_FORMAT_H_

#include <string>
#include <vector>

#include "cka/v1/similarity.pb.h"
#include "nlohmann/json.hpp"

namespace cka::ckactl {

// Returns the matrix as a table: a header line of column names, then one line
// per row starting with the row name, values with `precision` decimals, columns
// right-aligned.
std::string FormatTable(const v1::SimilarityMatrix& matrix, int precision,
                        bool standard_errors = false);
// Returns "row,col1,col2..." then one line per row; values with `precision`
// decimals.
std::string FormatCsv(const v1::SimilarityMatrix& matrix, int precision,
                      bool standard_errors = false);
// Returns
// {"session_id","measure","rows","cols","values":[[...]],"batches":[[...]]}.
nlohmann::json MatrixJson(const v1::SimilarityMatrix& matrix,
                          bool standard_errors = false);

// Returns a series as a table: one line per step bucket, its steps ("first..
// last", or "all" for a session without step buckets) then one column per
// pair, headed "row vs col".
std::string FormatSeriesTable(const v1::SimilaritySeries& series, int precision,
                              bool standard_errors = false);
// Returns "step_first,step_last,row vs col,..." then one line per bucket.
std::string FormatSeriesCsv(const v1::SimilaritySeries& series, int precision,
                            bool standard_errors = false);
// Returns {"session_id","measure","step_bucket","pairs":[{"row","col"}],
// "buckets":[{"step_first","step_last","values":[...],"batches":[...]}]}.
nlohmann::json SeriesJson(const v1::SimilaritySeries& series,
                          bool standard_errors = false);

// Returns a session as JSON: id, measures (specs), declared streams, streams,
// counters.
nlohmann::json SessionJson(const v1::Session& session);
// Returns a human-readable description of a session, several lines.
std::string FormatSession(const v1::Session& session);
// Returns one aligned line per session under a header.
std::string FormatSessionList(const std::vector<v1::Session>& sessions);

// The blocks of a matrix asked with block_threshold (v1::LayerBlock): a
// table, one line per block ("source: first .. last, L of N layers, mean m,
// min m"), then one "WARNING: ..." line per block that warns, or "no blocks";
// CSV "source,first_stream,last_stream,first_layer,length,source_layers,
// mean_value,min_value,warning" then one line per block; JSON an array of
// objects with those keys. `threshold` and `share` only word the table.
std::string FormatBlocks(const v1::SimilarityMatrix& matrix, double threshold,
                         double share, int precision);
std::string FormatBlocksCsv(const v1::SimilarityMatrix& matrix, int precision);
nlohmann::json BlocksJson(const v1::SimilarityMatrix& matrix);

}  // namespace cka::ckactl

#endif  // CKA_CLIENT_CKACTL_MATRIX_FORMAT_H_
