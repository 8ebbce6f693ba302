// The worker threads of ckad's HTTP server, with a bounded queue of accepted
// connections.
#ifndef CKA_SERVER_HTTP_TASK_QUEUE_H_
#define CKA_SERVER_HTTP_TASK_QUEUE_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "httplib.h"

namespace cka::server {

// httplib's TaskQueue with `threads` workers and at most `max_queued`
// connections waiting for one. httplib's own ThreadPool queues without
// bound; here enqueue (called by the accepting thread) blocks while the queue
// is full, so further connections wait in the kernel's listen backlog instead
// of in ckad's memory. Thread-safe.
class HttpTaskQueue final : public httplib::TaskQueue {
 public:
  HttpTaskQueue(int threads, int max_queued);
  // Calls shutdown().
  ~HttpTaskQueue() override;

  // Queues `fn` (the handling of one connection), waiting for room.
  void enqueue(std::function<void()> fn) override;
  // Runs what is queued, then joins the workers. Idempotent.
  void shutdown() override;

 private:
  void Work();

  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_HTTP_TASK_QUEUE_H_
