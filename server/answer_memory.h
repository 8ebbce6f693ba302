// The memory of a query's answer after the core query returns: the core
// matrix or series, its protobuf message and the bytes gRPC serialises it to,
// held until the call is done (a slow or stalled reader keeps its answer in
// gRPC's buffers). Priced from the answer's shape before the message is built,
// drawn from ckad's memory budget, and released when the call ends.
#ifndef CKA_SERVER_ANSWER_MEMORY_H_
#define CKA_SERVER_ANSWER_MEMORY_H_

#include <cstdint>

#include "cka/core/memory_budget.h"
#include "cka/core/session.h"
#include "cka/v1/similarity.pb.h"
#include "grpcpp/support/server_callback.h"

namespace cka::server {

// Returns an upper bound on the bytes an answer holds once converted: the core
// value itself, its protobuf message and one serialised copy of it.
int64_t AnswerBytes(const core::SimilarityMatrix& matrix);
int64_t AnswerBytes(const core::SimilaritySeries& series);

// Returns an upper bound on the bytes the JSON API holds for a received
// answer: the message as received and its JSON text (protobuf's JSON mapping:
// at most 25 characters per double, 24 per int64, which it quotes).
int64_t JsonAnswerBytes(const v1::SimilarityMatrix& matrix);
int64_t JsonAnswerBytes(const v1::SimilaritySeries& series);

// A unary reactor that holds its answer's reservation until gRPC is done with
// the call (the response sent or the call cancelled), then deletes itself.
class AnswerReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit AnswerReactor(core::MemoryBudget* budget)
      : memory_(budget != nullptr ? budget->Empty()
                                  : core::MemoryBudget::Reservation()) {}
  void OnDone() override { delete this; }
  core::MemoryBudget::Reservation& memory() { return memory_; }

 private:
  core::MemoryBudget::Reservation memory_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_ANSWER_MEMORY_H_
