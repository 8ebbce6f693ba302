// A fixed-size pool of worker threads.
#ifndef CKA_CORE_THREAD_POOL_H_
#define CKA_CORE_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace cka::core {

// Runs closures on `threads` workers. Thread-safe. The destructor runs what is
// queued, then joins the workers.
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn` to run on a worker. Never blocks.
  void Schedule(std::function<void()> fn);

  // Queues `fn` ahead of everything queued by Schedule (behind earlier
  // ScheduleUrgent work): for short work whose latency matters, such as
  // answering a query while batches wait. It still waits for a worker to
  // finish what it is running. Never blocks.
  void ScheduleUrgent(std::function<void()> fn);

  // Calls fn(i) for every i in [0, n) on the workers and the calling thread,
  // and returns when all calls have returned. Safe to call from a worker (the
  // caller does the work that no free worker takes, so it cannot deadlock).
  void ParallelFor(int n, const std::function<void(int)>& fn);

  // Returns the number of worker threads.
  int size() const { return static_cast<int>(workers_.size()); }

 private:
  void Work();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> urgent_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace cka::core

#endif  // CKA_CORE_THREAD_POOL_H_
