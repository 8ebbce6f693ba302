// Session::QueryBlocks: the block structure of each source's own layers
// (block_structure.h), from one square Query per source.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "cka/core/block_structure.h"
#include "cka/core/session.h"
#include "session_state.h"

namespace cka::core {

absl::StatusOr<std::vector<LayerBlock>> Session::QueryBlocks(
    const SimilarityQuery& query) const {
  const BlockOptions options{*query.block_threshold, query.block_warn_share};
  // Each source's layers in first-seen order; sources in order of first
  // appearance.
  std::vector<std::vector<std::string>> sources;
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_map<std::string_view, size_t> index;
    for (const std::string& stream : state_->streams) {
      auto [it, inserted] =
          index.try_emplace(StreamSource(stream), sources.size());
      if (inserted) sources.emplace_back();
      sources[it->second].push_back(stream);
    }
  }
  // A source of n layers costs an n × n query, so the whole summary costs
  // Σ n² entries rather than the S² of the session's full matrix.
  std::vector<LayerBlock> blocks;
  for (std::vector<std::string>& layers : sources) {
    if (layers.size() < 2) continue;
    SimilarityQuery square;
    square.measure = query.measure;
    square.step_min = query.step_min;
    square.step_max = query.step_max;
    square.rows = layers;
    square.cols = std::move(layers);
    absl::StatusOr<SimilarityMatrix> m = Query(square);
    if (!m.ok()) return m.status();
    absl::StatusOr<std::vector<LayerBlock>> found =
        FindLayerBlocks(m->rows, m->values, options);
    if (!found.ok()) return found.status();
    for (LayerBlock& b : *found) blocks.push_back(std::move(b));
  }
  return blocks;
}

}  // namespace cka::core
