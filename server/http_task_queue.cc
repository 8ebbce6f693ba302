#include "server/http_task_queue.h"

#include <utility>

namespace cka::server {

HttpTaskQueue::HttpTaskQueue(int threads, int max_queued)
    : max_queued_(static_cast<size_t>(max_queued)) {
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
}

HttpTaskQueue::~HttpTaskQueue() { shutdown(); }

void HttpTaskQueue::enqueue(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](HttpTaskQueue* q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu_) {
        return q->jobs_.size() < q->max_queued_ || q->shutdown_;
      },
      this));
  jobs_.push_back(std::move(fn));
}

void HttpTaskQueue::shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void HttpTaskQueue::Work() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](HttpTaskQueue* q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu_) {
            return !q->jobs_.empty() || q->shutdown_;
          },
          this));
      if (jobs_.empty()) return;  // shut down and drained
      fn = std::move(jobs_.front());
      jobs_.pop_front();
    }
    fn();
  }
}

}  // namespace cka::server
