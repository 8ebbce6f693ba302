// What Session::Prepare hands to Session::Commit (PreparedBatch's contents).
// Internal to cka::core.
#ifndef CKA_CORE_SRC_PREPARED_BATCH_H_
#define CKA_CORE_SRC_PREPARED_BATCH_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "buffer_cache.h"
#include "cka/core/memory_budget.h"
#include "cka/core/session.h"

namespace cka::core {

struct PreparedBatch::Rep {
  std::string batch_id;
  int64_t step = 0;
  int64_t n = 0;
  std::vector<std::string> streams;  // per layer
  std::vector<int64_t> widths;       // per layer; 0 for a Gram
  // Per minibatch measure: k packed kernels of PackedSize(n) (hsic.h), from
  // and back to BufferCache::Global().
  std::vector<std::vector<double>> kernels;
  // Per minibatch measure: k × k, (i, j) = HSIC(K_i, K_j) for j >= i (upper
  // triangle only). Computed in Prepare so that Commit computes only the
  // pairs with layers of earlier messages.
  std::vector<std::vector<double>> pairs;
  std::vector<std::vector<double>>
      activations;  // exact sessions: per layer, n × d
  // The memory Prepare priced for this batch, drawn from the session's budget
  // until the batch is committed or dropped.
  MemoryBudget::Reservation work;

  ~Rep() {
    for (std::vector<double>& k : kernels)
      BufferCache::Global().Give(std::move(k));
  }
};

}  // namespace cka::core

#endif  // CKA_CORE_SRC_PREPARED_BATCH_H_
