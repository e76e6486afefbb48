// Driver of fused attention (attention.h): picks the path's tile kernels
// (attention_kernels.h, attention_tiles.h) and spreads the tasks over the
// thread pool, each worker with its own slice of one scratch buffer.
#include "attention.h"

#include "aligned_buffer.h"
#include "attention_kernels.h"
#include "cpu.h"
#include "thread_pool.h"

#include <cstdlib>
#include <cstring>

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
  // Forward tiling (attention_kernels.h): heads and steps per tile, head
  // chunks per group, step tiles. Backward: key-tile chunks per (b, g).
  int64_t tile_heads, tile_steps, chunks, step_tiles;
  // Backward with chunks > 1 and dq wanted: chunks − 1 partial dq buffers of dq_size floats.
  float* partials;
  int64_t dq_size;
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

// Task = ((b·G + g)·chunks + chunk). Chunk c > 0 adds its dq share into
// partial buffer c − 1 (chunk 0 into dq itself).
void backward_task(void* context, int64_t task, int worker) {
  const Job& job = *static_cast<const Job*>(context);
  const int64_t chunk = task % job.chunks, bg = task / job.chunks;
  AttentionBuffers io = job.io;
  if (chunk > 0 && io.dq != nullptr) io.dq = job.partials + (chunk - 1) * job.dq_size;
  job.kernels->backward(io, job.args, bg / job.args.G, bg % job.args.G, chunk, job.chunks, job.scratch + worker * job.per_worker);
}

// dq += partial₁ + … + partial_{chunks−1}, in that order, one slice per task.
constexpr int64_t kReduceSlice = 1 << 14;

void reduce_task(void* context, int64_t task, int) {
  const Job& job = *static_cast<const Job*>(context);
  const int64_t begin = task * kReduceSlice, end = min64(job.dq_size, begin + kReduceSlice);
  float* dq = job.io.dq;
  for (int64_t c = 1; c < job.chunks; ++c) {
    const float* p = job.partials + (c - 1) * job.dq_size;
    for (int64_t i = begin; i < end; ++i) dq[i] += p[i];
  }
}

double score_work(const AttentionArgs& a) { return static_cast<double>(a.B) * a.H * a.T * a.S * a.D; }

// Runs fn over `tasks` on the pool (or the caller, for small calls) with a
// scratch slice per worker. False when the scratch cannot be allocated.
bool run(Job& job, int64_t tasks, TaskFn fn) {
  const AttentionArgs& a = job.args;
  ThreadPool& pool = ThreadPool::shared();
  const bool parallel = score_work(a) >= kMinParallelWork && tasks > 1 && pool.size() > 1;
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
          attention_forward_scratch(a.D), 0, 0, 0, 0, nullptr, 0};
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
          0, 0, attention_backward_chunks(a, dq != nullptr), 0, nullptr, a.B * a.T * a.H * a.D};
  if (job.chunks == 1 || dq == nullptr) return run(job, a.B * a.G * job.chunks, backward_task);
  // Partial dq buffers, zeroed; chunk 0 adds into dq itself.
  const size_t partial_floats = static_cast<size_t>((job.chunks - 1) * job.dq_size);
  float* partials = static_cast<float*>(std::aligned_alloc(AlignedBuffer::kAlignment, (partial_floats * sizeof(float) + 63) / 64 * 64));
  if (partials == nullptr) return false;
  std::memset(partials, 0, partial_floats * sizeof(float));
  job.partials = partials;
  const bool ok = run(job, a.B * a.G * job.chunks, backward_task);
  if (ok) {
    const int64_t slices = (job.dq_size + kReduceSlice - 1) / kReduceSlice;
    ThreadPool& pool = ThreadPool::shared();
    if (slices > 1 && pool.size() > 1) {
      pool.run(slices, reduce_task, &job);
    } else {
      for (int64_t t = 0; t < slices; ++t) reduce_task(&job, t, 0);
    }
  }
  std::free(partials);
  return ok;
}

int64_t attention_backward_chunks(const AttentionArgs& a, bool with_dq) {
  const int64_t groups = a.B * a.G;
  if (groups >= kAttentionBackwardTasks || score_work(a) < kMinParallelWork) return 1;
  const int64_t key_tiles = (a.S + kAttentionKeyTile - 1) / kAttentionKeyTile;
  int64_t chunks = min64(key_tiles, (kAttentionBackwardTasks + groups - 1) / groups);
  if (with_dq) {
    // Each chunk past the first holds a dq-sized partial buffer.
    const int64_t dq_size = a.B * a.T * a.H * a.D;
    chunks = min64(chunks, 1 + kAttentionPartialFloats / (dq_size > 0 ? dq_size : 1));
  }
  return chunks > 1 ? chunks : 1;
}

}  // namespace qkd
