#include "server/http_event_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/answer_memory.h"
#include "server/http_status.h"

namespace cka::server {

void SimilarityEventStream::Start(v1::Similarity::Stub* stub,
                                  const v1::WatchSimilarityRequest& request) {
  request_ = request;
  stub->async()->WatchSimilarity(&context_, &request_, this);
  StartRead(&reading_);
  StartCall();
}

void SimilarityEventStream::OnReadDone(bool ok) {
  // A failed read means the call is ending: OnDone follows.
  if (!ok) return;
  {
    absl::MutexLock lock(&mu_);
    // A matrix the consumer has not taken yet is replaced: the newer one
    // supersedes it.
    ready_ = std::move(reading_);
    reading_.Clear();
  }
  StartRead(&reading_);
}

void SimilarityEventStream::OnDone(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  done_ = status;
}

SimilarityEventStream::Next SimilarityEventStream::Wait(absl::Duration timeout,
                                                        std::string* event) {
  event->clear();
  std::optional<v1::SimilarityMatrix> matrix;
  {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](SimilarityEventStream* s)
                                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
                                    return s->ready_.has_value() ||
                                           s->done_.has_value();
                                  },
                             this),
                         timeout);
    if (ready_.has_value()) {
      matrix = std::move(ready_);
      ready_.reset();
    } else if (done_.has_value()) {
      if (!done_->ok()) {
        *event = absl::StrCat(
            "event: error\ndata: ",
            ErrorJson(done_->error_code(), done_->error_message()), "\n\n");
      }
      return Next::kEnded;
    } else {
      return Next::kTimeout;
    }
  }
  event_memory_.Release();  // the previous event is written
  if (memory_ != nullptr) {
    absl::StatusOr<core::MemoryBudget::Reservation> held =
        memory_->Reserve(JsonAnswerBytes(*matrix), "the JSON of a watch event");
    if (!held.ok()) {
      const grpc::Status refused(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 std::string(held.status().message()));
      {
        absl::MutexLock lock(&mu_);
        refused_ = refused;
      }
      *event = absl::StrCat(
          "event: error\ndata: ",
          ErrorJson(refused.error_code(), refused.error_message()), "\n\n");
      return Next::kEnded;
    }
    event_memory_ = *std::move(held);
  }
  *event = absl::StrCat("event: matrix\ndata: ", MessageJson(*matrix), "\n\n");
  return Next::kEvent;
}

grpc::Status SimilarityEventStream::status() {
  absl::MutexLock lock(&mu_);
  if (refused_.has_value()) return *refused_;
  return done_.value_or(grpc::Status::OK);
}

void SimilarityEventStream::WaitDone() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](SimilarityEventStream* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
        return s->done_.has_value();
      },
      this));
}

}  // namespace cka::server
