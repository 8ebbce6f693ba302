#include "cka/core/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <memory>

namespace cka::core {

ThreadPool::ThreadPool(int threads, const std::string& name) {
  if (threads < 1) threads = 1;
  // Linux keeps 15 bytes of a thread's name.
  const std::string thread_name = name.substr(0, 15);
  workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    workers_.emplace_back([this, thread_name] {
      pthread_setname_np(pthread_self(), thread_name.c_str());
      Work();
    });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Schedule(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(fn));
}

void ThreadPool::Work() {
  while (true) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->stopping_ || !p->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping and drained
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

void ThreadPool::ParallelFor(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  if (n == 1) {
    fn(0);
    return;
  }
  // Shared with helper closures that may start after this call returned: they
  // then find no index left and touch only this state, which they co-own.
  struct State {
    std::atomic<int> next{0};
    absl::Mutex mu;
    int done ABSL_GUARDED_BY(mu) = 0;
    int n = 0;
    const std::function<void(int)>* fn = nullptr;
  };
  auto state = std::make_shared<State>();
  state->fn = &fn;
  state->n = n;
  auto run = [n](State& s) {
    int finished = 0;
    for (int i = s.next.fetch_add(1); i < n; i = s.next.fetch_add(1)) {
      (*s.fn)(i);
      ++finished;
    }
    if (finished > 0) {
      absl::MutexLock lock(&s.mu);
      s.done += finished;
    }
  };
  const int helpers = std::min(n - 1, size());
  for (int h = 0; h < helpers; ++h) Schedule([state, run] { run(*state); });
  run(*state);
  absl::MutexLock lock(&state->mu);
  state->mu.Await(absl::Condition(
      +[](State* s)
           ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->done == s->n; },
      state.get()));
}

}  // namespace cka::core
