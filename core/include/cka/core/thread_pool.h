// A fixed-size pool of worker threads.
#ifndef CKA_CORE_THREAD_POOL_H_
#define CKA_CORE_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace cka::core {

// Runs closures on `threads` workers. Thread-safe. The destructor runs what is
// queued, then joins the workers.
class ThreadPool {
 public:
  // `name` names the worker threads (as top -H and perf show them; Linux keeps
  // its first 15 bytes).
  explicit ThreadPool(int threads, const std::string& name = "cka-pool");
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn` to run on a worker. Never blocks.
  void Schedule(std::function<void()> fn);

  // Calls fn(i) for every i in [0, n) on the workers and the calling thread,
  // and returns when all calls have returned. Safe to call from a worker (the
  // caller does the work that no free worker takes, so it cannot deadlock).
  void ParallelFor(int n, const std::function<void(int)>& fn);

  // Returns the number of worker threads.
  int size() const { return static_cast<int>(workers_.size()); }

 private:
  void Work();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace cka::core

#endif  // CKA_CORE_THREAD_POOL_H_
