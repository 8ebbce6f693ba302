// Block structure of a CKA matrix: runs of consecutive layers of one source
// whose representations are all alike (core/MATH.md, "Block structure").
// Kornblith et al. 2019 (section 6.2) show that networks made too deep grow a
// large block of consecutive layers with near-identical representations; this
// summary finds such blocks.
#ifndef CKA_CORE_BLOCK_STRUCTURE_H_
#define CKA_CORE_BLOCK_STRUCTURE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cka::core {

// The default share of a source's layers past which a block is a warning.
inline constexpr double kDefaultBlockWarnShare = 0.5;

// What counts as a block.
struct BlockOptions {
  // A pair of layers is alike when its CKA is > threshold (strictly; NaN
  // never is). Finite, in (0, 1].
  double threshold = 0.95;
  // A block warns when its length > warn_share × its source's layer count.
  // Finite, in (0, 1].
  double warn_share = kDefaultBlockWarnShare;
};

// One run of consecutive layers of one source, all pairwise alike.
struct LayerBlock {
  std::string source;         // the part of the stream names before '/'; ""
                              // for streams without one
  std::string first_stream;   // full stream name of the run's first layer
  std::string last_stream;    // and of its last
  int64_t first_layer = 0;    // position of first_stream among the source's
                              // layers (0-based, in the order given)
  int64_t length = 0;         // layers in the run, >= 2
  int64_t source_layers = 0;  // layers of the source
  // Mean and minimum of the run's off-diagonal entries (both triangles: for an
  // asymmetric measure each ordered pair counts once).
  double mean_value = 0.0;
  double min_value = 0.0;
  bool warning = false;  // length > warn_share × source_layers
};

// Returns the source of a stream name: the part before the first '/', or ""
// when there is none.
std::string_view StreamSource(std::string_view stream);

// InvalidArgument naming the field ("block_threshold", "block_warn_share") and
// its value when `options` is outside the ranges above.
absl::Status ValidateBlockOptions(const BlockOptions& options);

// Returns the blocks of every source among `streams` (S names, in the order
// that defines "consecutive": a session's first-seen order, declared streams
// first). `values` is the S × S row-major CKA matrix over them:
// values[i * S + j] = CKA(streams[i], streams[j]); only entries between two
// layers of one source are read, the diagonal never. Layers i < j are alike
// when both values[i * S + j] and values[j * S + i] are > threshold, so an
// asymmetric measure must exceed it both ways.
//
// A candidate is an interval of >= 2 consecutive layers of one source in which
// every pair is alike. Candidates can overlap (a ~ b and b ~ c without a ~ c
// gives [a, b] and [b, c]), so blocks are chosen greedily, longest first: the
// longest candidate (ties: the one starting earliest) becomes a block, then
// the longest candidate that overlaps no block chosen so far, and so on until
// none is left. Blocks
// therefore never overlap, the longest run of alike layers is always reported
// whole, and each block is maximal: it cannot grow by a layer without
// breaking the all-pairs condition or overlapping a block chosen before it.
// The rule is deterministic and needs only the matrix, so a reader can check
// it by hand. Sources with fewer than 2 layers have no block.
//
// Blocks come ordered by source (in order of first appearance in `streams`),
// then by first_layer. InvalidArgument for bad options or when values.size()
// is not S². O(S + Σ n²) time for sources of n layers. Thread-safe (pure).
absl::StatusOr<std::vector<LayerBlock>> FindLayerBlocks(
    const std::vector<std::string>& streams, const std::vector<double>& values,
    const BlockOptions& options);

}  // namespace cka::core

#endif  // CKA_CORE_BLOCK_STRUCTURE_H_
