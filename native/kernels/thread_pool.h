// A persistent pool of worker threads shared by every kernel.
//
// Created on first use with QKD_THREADS threads (default: the number of
// hardware threads), the calling thread included, and never torn down: the
// workers sleep on a condition variable between jobs and die with the process.
#pragma once

#include <cstdint>

namespace qkd {

// One unit of a parallel job: `task` is in [0, count); `worker` is 0 for the
// calling thread and 1..size()-1 for pool threads.
using TaskFn = void (*)(void* context, int64_t task, int worker);

// QKD_THREADS if set to a positive integer, else hardware_concurrency().
int configured_thread_count();

class ThreadPool {
 public:
  static ThreadPool& shared();

  // Threads that run tasks, the caller included.
  int size() const { return size_; }

  // Runs fn(context, t, worker) for every t in [0, count) and returns when
  // all have finished. Tasks are handed out dynamically, the caller takes
  // part. If the pool is already running a job (a call from another thread,
  // or a nested call from inside a task) the tasks run serially on the
  // caller instead, so a call never waits for someone else's job.
  void run(int64_t count, TaskFn fn, void* context);

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  struct State;  // defined in thread_pool.cc

 private:
  explicit ThreadPool(int size);
  State* state_;
  int size_;
};

}  // namespace qkd
