// Driver of fused attention (attention.h): picks the path's tile kernels
// (attention_kernels.h, attention_tiles.h) and spreads the tasks over the
// thread pool, each worker with its own slice of one scratch buffer.
#include "attention.h"

#include "aligned_buffer.h"
#include "attention_kernels.h"
#include "cpu.h"
#include "thread_pool.h"

namespace qkd {
namespace {

const AttentionKernels& kernels_for(Isa isa) {
  const AttentionKernels* kernels = nullptr;
  if (isa == Isa::kAvx512) kernels = avx512_attention_kernels();
  if (isa == Isa::kAvx2) kernels = avx2_attention_kernels();
  return kernels != nullptr ? *kernels : *portable_attention_kernels();
}

// Below this many score multiply-adds (B·H·T·S·D) a call stays on the calling thread.
constexpr double kMinParallelWork = 1 << 16;

struct Job {
  const AttentionKernels* kernels;
  AttentionBuffers io;
  AttentionArgs args;
  float* scratch;
  int64_t per_worker;  // floats of scratch per worker
  int64_t tiles;       // query tiles per head (forward)
};

void forward_task(void* context, int64_t task, int worker) {
  const Job& job = *static_cast<const Job*>(context);
  const AttentionArgs& a = job.args;
  const int64_t head = task / job.tiles;  // b·H + h
  const int64_t t0 = (task % job.tiles) * kAttentionQueryTile;
  const int64_t rows = a.T - t0 < kAttentionQueryTile ? a.T - t0 : kAttentionQueryTile;
  job.kernels->forward(job.io, a, head / a.H, head % a.H, t0, rows, job.scratch + worker * job.per_worker);
}

void backward_task(void* context, int64_t task, int worker) {
  const Job& job = *static_cast<const Job*>(context);
  job.kernels->backward(job.io, job.args, task / job.args.G, task % job.args.G, job.scratch + worker * job.per_worker);
}

// Runs fn over `tasks` on the pool (or the caller, for small calls) with a
// scratch slice per worker. False when the scratch cannot be allocated.
bool run(Job& job, int64_t tasks, TaskFn fn) {
  const AttentionArgs& a = job.args;
  ThreadPool& pool = ThreadPool::shared();
  const double work = static_cast<double>(a.B) * a.H * a.T * a.S * a.D;
  const bool parallel = work >= kMinParallelWork && tasks > 1 && pool.size() > 1;
  const int64_t workers = parallel ? pool.size() : 1;
  static thread_local AlignedBuffer buffer;
  job.scratch = buffer.reserve(static_cast<size_t>(workers * job.per_worker));
  if (job.scratch == nullptr) return false;
  if (parallel) {
    pool.run(tasks, fn, &job);
  } else {
    for (int64_t task = 0; task < tasks; ++task) fn(&job, task, 0);
  }
  return true;
}

}  // namespace

bool attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, const AttentionArgs& a) {
  if (a.B == 0 || a.H == 0 || a.T == 0) return true;
  Job job{&kernels_for(active_isa()), AttentionBuffers{q, k, v, nullptr, nullptr, nullptr, o, lse, nullptr, nullptr, nullptr}, a, nullptr,
          attention_forward_scratch(a.D), (a.T + kAttentionQueryTile - 1) / kAttentionQueryTile};
  return run(job, a.B * a.H * job.tiles, forward_task);
}

bool attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                        const float* dO, float* dq, float* dk, float* dv, const AttentionArgs& a) {
  if (a.B == 0 || a.H == 0 || a.T == 0 || a.S == 0) return true;
  if (dq == nullptr && dk == nullptr && dv == nullptr) return true;
  Job job{&kernels_for(active_isa()),
          AttentionBuffers{q, k, v, o, lse, dO, nullptr, nullptr, dq, dk, dv},
          a,
          nullptr,
          attention_backward_scratch(a.D, a.H / a.G, a.T),
          0};
  return run(job, a.B * a.G, backward_task);
}

}  // namespace qkd
