// Idle-priority background jobs (docs/architecture.md, "Threads").
//
// A job is a number of independent tasks and a finish step. A single
// background thread, at the lowest scheduling priority the OS offers
// (Linux SCHED_IDLE: it runs only on a core nothing else wants), takes the
// tasks of the queued jobs one at a time. Whoever waits for a job takes the
// tasks nobody has started, on the thread pool, waits for those in progress
// and runs the finish step: a job costs its caller at most what running it
// on the spot would, and every core the foreground leaves idle meanwhile
// (a JavaScript stretch between two kernels, a file read) does part of it.
// Tasks must not depend on which thread runs them or in which order (each
// writes its own slots; the finish step combines them in a fixed order), so
// the results are the same as a foreground run's.
#pragma once

#include <cstdint>
#include <memory>

namespace qkd {

class BackgroundJob {
 public:
  virtual ~BackgroundJob() = default;
  virtual int64_t tasks() const = 0;
  virtual void run(int64_t task) = 0;
  // After every task, on the waiting thread: the job's result.
  virtual int64_t finish() = 0;
};

// Queues a job; returns its handle (> 0).
int64_t background_start(std::unique_ptr<BackgroundJob> job);

// Completes the job (see above) and stores finish()'s result; false for an
// unknown handle (each handle is waited for once).
bool background_wait(int64_t handle, int64_t* result);

}  // namespace qkd
