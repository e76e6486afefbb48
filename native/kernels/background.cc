#include "background.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include "thread_pool.h"

namespace qkd {
namespace {

struct Entry {
  std::unique_ptr<BackgroundJob> job;
  int64_t count = 0;
  std::atomic<int64_t> next{0};  // the next task nobody has taken
  std::atomic<int64_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
};

// Takes and runs tasks of `e` until none is left to take.
void take_tasks(Entry& e) {
  for (;;) {
    const int64_t task = e.next.fetch_add(1, std::memory_order_relaxed);
    if (task >= e.count) return;
    e.job->run(task);
    if (e.done.fetch_add(1, std::memory_order_acq_rel) + 1 == e.count) {
      std::lock_guard<std::mutex> lock(e.mutex);
      e.finished.notify_all();
    }
  }
}

// The queue and the jobs in flight. Deliberately leaked, like the pool: the
// background thread may still hold them while the process exits.
struct Queue {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Entry>> jobs;
  std::map<int64_t, std::shared_ptr<Entry>> by_handle;
  int64_t last = 0;
  bool thread_started = false;
};

Queue& queue() {
  static Queue* q = new Queue;
  return *q;
}

void background_loop() {
#if defined(__linux__)
  sched_param none{};
  pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);  // if refused, it runs at normal priority
#endif
  Queue& q = queue();
  for (;;) {
    std::shared_ptr<Entry> e;
    {
      std::unique_lock<std::mutex> lock(q.mutex);
      q.wake.wait(lock, [&] { return !q.jobs.empty(); });
      e = q.jobs.front();
    }
    take_tasks(*e);
    std::lock_guard<std::mutex> lock(q.mutex);
    if (!q.jobs.empty() && q.jobs.front() == e) q.jobs.pop_front();
  }
}

}  // namespace

int64_t background_start(std::unique_ptr<BackgroundJob> job) {
  auto e = std::make_shared<Entry>();
  e->count = job->tasks();
  e->job = std::move(job);
  Queue& q = queue();
  std::lock_guard<std::mutex> lock(q.mutex);
  if (!q.thread_started) {
    std::thread(background_loop).detach();
    q.thread_started = true;
  }
  const int64_t handle = ++q.last;
  q.by_handle[handle] = e;
  q.jobs.push_back(e);
  q.wake.notify_one();
  return handle;
}

bool background_wait(int64_t handle, int64_t* result) {
  Queue& q = queue();
  std::shared_ptr<Entry> e;
  {
    std::lock_guard<std::mutex> lock(q.mutex);
    auto it = q.by_handle.find(handle);
    if (it == q.by_handle.end()) return false;
    e = it->second;
    q.by_handle.erase(it);
  }
  // The tasks nobody has started, on every pool thread (each takes until none is left).
  ThreadPool& pool = ThreadPool::shared();
  if (e->next.load(std::memory_order_relaxed) < e->count) {
    pool.run(pool.size(), [](void* context, int64_t, int) { take_tasks(*static_cast<Entry*>(context)); }, e.get());
  }
  {
    std::unique_lock<std::mutex> lock(e->mutex);
    e->finished.wait(lock, [&] { return e->done.load(std::memory_order_acquire) == e->count; });
  }
  *result = e->job->finish();
  // Every task has ended, so nothing touches the job again (the background thread may still hold the entry
  // in its queue, but only to find no task left): its memory goes now.
  e->job.reset();
  return true;
}

}  // namespace qkd
