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

int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

struct Job {
  const AttentionKernels* kernels;
  AttentionBuffers io;
  AttentionArgs args;
  float* scratch;
  int64_t per_worker;  // floats of scratch per worker
  // Forward tiling (attention_kernels.h): heads and steps per tile, head chunks per group, step tiles.
  int64_t tile_heads, tile_steps, chunks, step_tiles;
};

// Task = ((b·G + g)·chunks + chunk)·step_tiles + step tile.
void forward_task(void* context, int64_t task, int worker) {
  const Job& job = *static_cast<const Job*>(context);
  const AttentionArgs& a = job.args;
  const int64_t step_tile = task % job.step_tiles;
  const int64_t chunk = task / job.step_tiles % job.chunks;
  const int64_t bg = task / job.step_tiles / job.chunks;
  const int64_t group = a.H / a.G;
  const int64_t h0 = bg % a.G * group + chunk * job.tile_heads;
  const int64_t t0 = step_tile * job.tile_steps;
  const AttentionTile tile{bg / a.G, t0, min64(job.tile_steps, a.T - t0), h0, min64(job.tile_heads, (bg % a.G + 1) * group - h0)};
  job.kernels->forward(job.io, a, tile, job.scratch + worker * job.per_worker);
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
          attention_forward_scratch(a.D), 0, 0, 0, 0};
  attention_tiling(a, &job.tile_heads, &job.tile_steps);
  job.chunks = (a.H / a.G + job.tile_heads - 1) / job.tile_heads;
  job.step_tiles = (a.T + job.tile_steps - 1) / job.tile_steps;
  return run(job, a.B * a.G * job.chunks * job.step_tiles, forward_task);
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
          0, 0, 0, 0};
  return run(job, a.B * a.G, backward_task);
}

}  // namespace qkd
