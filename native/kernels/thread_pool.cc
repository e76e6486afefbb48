#include "thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QKD_CPU_RELAX() _mm_pause()
#else
#define QKD_CPU_RELAX() std::this_thread::yield()
#endif

namespace qkd {

// How long an idle worker polls for the next job before it sleeps, and how
// long the caller polls for the last task before it sleeps. Short: back-to-
// back kernel calls avoid a futex wake-up, yet an idle pool costs nothing.
static constexpr int kWorkerSpins = 4000;
static constexpr int kCallerSpins = 4000;

// A job is published through one 64-bit ticket: the high 32 bits count jobs
// (the generation, never 0 once a job ran), the low 32 bits are the next
// task index. The job's description (fn, context, count) is guarded like a
// seqlock by `described`: 0 while the caller rewrites it, then the
// generation it belongs to. A worker that woke up late, for a job that has
// since finished, sees either a different generation in the description or
// in the ticket and backs off, so it can never run a task of the next job
// with the old job's function, or an old task index with the new function.
struct ThreadPool::State {
  std::mutex submit;  // held by the thread whose job is running
  std::mutex mutex;   // guards sleeping/waking
  std::condition_variable wake;
  std::condition_variable done;
  std::atomic<uint64_t> ticket{0};
  std::atomic<uint32_t> described{0};
  std::atomic<TaskFn> fn{nullptr};
  std::atomic<void*> context{nullptr};
  std::atomic<int64_t> count{0};
  std::atomic<int64_t> remaining{0};
  int sleeping_workers = 0;  // under mutex
  bool caller_sleeping = false;  // under mutex
};

static uint32_t generation_of(uint64_t ticket) { return static_cast<uint32_t>(ticket >> 32); }

// Claims and runs tasks of generation `generation` until none are left.
static void drain(ThreadPool::State* s, uint32_t generation, int worker) {
  if (s->described.load(std::memory_order_acquire) != generation) return;
  const TaskFn fn = s->fn.load(std::memory_order_relaxed);
  void* const context = s->context.load(std::memory_order_relaxed);
  const int64_t count = s->count.load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (s->described.load(std::memory_order_relaxed) != generation) return;
  uint64_t ticket = s->ticket.load(std::memory_order_acquire);
  for (;;) {
    if (generation_of(ticket) != generation) return;
    const int64_t task = static_cast<int64_t>(ticket & 0xffffffffu);
    if (task >= count) return;
    if (!s->ticket.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel)) continue;
    fn(context, task, worker);
    if (s->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(s->mutex);
      if (s->caller_sleeping) s->done.notify_one();
    }
    ticket = s->ticket.load(std::memory_order_acquire);
  }
}

static void worker_loop(ThreadPool::State* s, int worker) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t generation = generation_of(s->ticket.load(std::memory_order_acquire));
    for (int spin = 0; spin < kWorkerSpins && generation == seen; ++spin) {
      QKD_CPU_RELAX();
      generation = generation_of(s->ticket.load(std::memory_order_acquire));
    }
    if (generation == seen) {
      std::unique_lock<std::mutex> lock(s->mutex);
      ++s->sleeping_workers;
      s->wake.wait(lock, [&] {
        generation = generation_of(s->ticket.load(std::memory_order_acquire));
        return generation != seen;
      });
      --s->sleeping_workers;
    }
    seen = generation;
    drain(s, generation, worker);
  }
}

int configured_thread_count() {
  const char* text = std::getenv("QKD_THREADS");
  if (text != nullptr) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end != text && *end == '\0' && value > 0) return value > 1024 ? 1024 : static_cast<int>(value);
  }
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

ThreadPool& ThreadPool::shared() {
  // Deliberately leaked: joining sleeping workers during process exit buys
  // nothing and can hang if exit happens on a worker.
  static ThreadPool* pool = new ThreadPool(configured_thread_count());
  return *pool;
}

ThreadPool::ThreadPool(int size) : state_(new State), size_(size) {
  for (int worker = 1; worker < size; ++worker) {
    std::thread(worker_loop, state_, worker).detach();
  }
}

void ThreadPool::run(int64_t count, TaskFn fn, void* context) {
  if (count <= 0) return;
  State* s = state_;
  if (size_ == 1 || count == 1 || count > 0xffffffffLL || !s->submit.try_lock()) {
    for (int64_t task = 0; task < count; ++task) fn(context, task, 0);
    return;
  }
  uint32_t generation = generation_of(s->ticket.load(std::memory_order_relaxed)) + 1;
  if (generation == 0) generation = 1;  // 0 means "being described"
  s->described.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s->fn.store(fn, std::memory_order_relaxed);
  s->context.store(context, std::memory_order_relaxed);
  s->count.store(count, std::memory_order_relaxed);
  s->remaining.store(count, std::memory_order_relaxed);
  s->described.store(generation, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(s->mutex);
    s->ticket.store(static_cast<uint64_t>(generation) << 32, std::memory_order_release);
    if (s->sleeping_workers > 0) s->wake.notify_all();
  }
  drain(s, generation, 0);
  for (int spin = 0; spin < kCallerSpins && s->remaining.load(std::memory_order_acquire) != 0; ++spin) {
    QKD_CPU_RELAX();
  }
  if (s->remaining.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(s->mutex);
    s->caller_sleeping = true;
    s->done.wait(lock, [&] { return s->remaining.load(std::memory_order_acquire) == 0; });
    s->caller_sleeping = false;
  }
  s->submit.unlock();
}

}  // namespace qkd
