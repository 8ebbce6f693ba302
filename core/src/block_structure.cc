// FindLayerBlocks: the longest-first greedy choice of runs of alike layers
// (block_structure.h states the rule).
#include "cka/core/block_structure.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"

namespace cka::core {

namespace {

absl::Status CheckShare(const char* field, double value) {
  if (std::isfinite(value) && value > 0.0 && value <= 1.0) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s %g is not a number in (0, 1]; e.g. %s", field, value,
      field == std::string_view("block_threshold") ? "0.95" : "0.5"));
}

// The blocks of one source whose layers are streams[layer[0]], ... (indices
// into the S × S `values`), appended to `out` ordered by first layer.
void SourceBlocks(const std::vector<std::string>& streams,
                  const std::vector<double>& values, size_t s,
                  const std::vector<size_t>& layer, const BlockOptions& options,
                  std::vector<LayerBlock>& out) {
  const size_t n = layer.size();
  if (n < 2) return;
  auto value = [&](size_t i, size_t j) {
    return values[layer[i] * s + layer[j]];
  };
  auto alike = [&](size_t i, size_t j) {
    // `>` is false for NaN, so a pair without a value is never alike.
    return value(i, j) > options.threshold && value(j, i) > options.threshold;
  };
  // reach[i]: the last j such that every pair in layers i..j is alike. The
  // interval i..j is a candidate iff i+1..j is one and i is alike with every
  // layer after it up to j, so reach[i] = min(reach[i + 1], the last j before
  // i's first unlike layer).
  std::vector<size_t> reach(n);
  reach[n - 1] = n - 1;
  for (size_t i = n - 1; i-- > 0;) {
    size_t far = i;
    while (far + 1 <= reach[i + 1] && alike(i, far + 1)) ++far;
    reach[i] = far;
  }
  // Longest first; every layer in a chosen block is taken, and a candidate
  // from i may not run into a taken layer.
  std::vector<bool> taken(n, false);
  std::vector<std::pair<size_t, size_t>> chosen;
  while (true) {
    size_t best_first = 0, best_len = 0;
    size_t free_end = n;  // one past the last free layer of i's free segment
    for (size_t i = n; i-- > 0;) {
      if (taken[i]) {
        free_end = i;
        continue;
      }
      const size_t len = std::min(reach[i] + 1, free_end) - i;
      if (len >= best_len) {  // `>=` while i descends: ties go to the earliest
        best_len = len;
        best_first = i;
      }
    }
    if (best_len < 2) break;
    for (size_t k = 0; k < best_len; ++k) taken[best_first + k] = true;
    chosen.emplace_back(best_first, best_len);
  }
  std::sort(chosen.begin(), chosen.end());
  for (const auto& [first, len] : chosen) {
    LayerBlock block;
    block.source = std::string(StreamSource(streams[layer[first]]));
    block.first_stream = streams[layer[first]];
    block.last_stream = streams[layer[first + len - 1]];
    block.first_layer = static_cast<int64_t>(first);
    block.length = static_cast<int64_t>(len);
    block.source_layers = static_cast<int64_t>(n);
    double sum = 0.0, min = value(first, first + 1);
    for (size_t i = first; i < first + len; ++i) {
      for (size_t j = first; j < first + len; ++j) {
        if (i == j) continue;
        sum += value(i, j);
        min = std::min(min, value(i, j));
      }
    }
    block.mean_value = sum / static_cast<double>(len * (len - 1));
    block.min_value = min;
    block.warning =
        static_cast<double>(len) > options.warn_share * static_cast<double>(n);
    out.push_back(std::move(block));
  }
}

}  // namespace

std::string_view StreamSource(std::string_view stream) {
  const size_t slash = stream.find('/');
  return slash == std::string_view::npos ? std::string_view()
                                         : stream.substr(0, slash);
}

absl::Status ValidateBlockOptions(const BlockOptions& options) {
  if (absl::Status s = CheckShare("block_threshold", options.threshold);
      !s.ok()) {
    return s;
  }
  return CheckShare("block_warn_share", options.warn_share);
}

absl::StatusOr<std::vector<LayerBlock>> FindLayerBlocks(
    const std::vector<std::string>& streams, const std::vector<double>& values,
    const BlockOptions& options) {
  if (absl::Status s = ValidateBlockOptions(options); !s.ok()) return s;
  const size_t s = streams.size();
  if (values.size() != s * s) {
    return absl::InvalidArgumentError(
        absl::StrFormat("values: %d entries for %d streams; expected %d × %d",
                        values.size(), s, s, s));
  }
  // Each source's layers in the order given; sources in order of first
  // appearance.
  absl::flat_hash_map<std::string_view, size_t> source_index;
  std::vector<std::vector<size_t>> layers;
  for (size_t i = 0; i < s; ++i) {
    auto [it, inserted] =
        source_index.try_emplace(StreamSource(streams[i]), layers.size());
    if (inserted) layers.emplace_back();
    layers[it->second].push_back(i);
  }
  std::vector<LayerBlock> out;
  for (const std::vector<size_t>& layer : layers) {
    SourceBlocks(streams, values, s, layer, options, out);
  }
  return out;
}

}  // namespace cka::core
