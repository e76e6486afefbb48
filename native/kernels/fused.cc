// Driver of the fused kernels: picks the path's table (fused_kernels.h) and
// spreads rows or element ranges over the thread pool.
//
// Determinism: every row, and every element, is computed by one task from
// the same inputs whatever the split, and the only cross-row sums (dw of
// RMSNorm, the loss totals) are added in an order fixed by the sizes alone.
#include "fused.h"

#include <cmath>
#include <cstring>

#include "aligned_buffer.h"
#include "fused_kernels.h"
#include "softmax_rows.h"
#include "thread_pool.h"

namespace qkd {
namespace {

const FusedKernels& kernels_for(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  const FusedKernels* kernels = nullptr;
  if (isa == Isa::kAvx512) kernels = avx512_fused_kernels();
  if (isa == Isa::kAvx2) kernels = avx2_fused_kernels();
  return kernels != nullptr ? *kernels : *portable_fused_kernels();
}

int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr float kInfinityF = __builtin_inff();

// Threads for `work` elements that split into at most `units` pieces.
int64_t threads_for(int64_t work, int64_t units, const Exec& exec) {
  if (work < kMinParallelWork || units < 2 || exec.max_threads < 2) return 1;
  return min64(min64(exec.max_threads, ThreadPool::shared().size()), units);
}

// Start of part k of [0, count) cut into `parts` near-equal pieces, rounded
// down to a multiple of `align` (element ranges start on a cache line).
int64_t part_start(int64_t count, int64_t parts, int64_t k, int64_t align) {
  if (k >= parts) return count;
  const int64_t base = count / parts, extra = count % parts;
  const int64_t start = k * base + min64(k, extra);
  return start / align * align;
}

template <class Body>
struct TaskJob {
  const Body* body;
};

template <class Body>
void run_task(void* context, int64_t task, int /*worker*/) {
  (*static_cast<const TaskJob<Body>*>(context)->body)(task);
}

// body(task) for every task in [0, tasks): on the pool when `parallel`,
// else in order on the caller.
template <class Body>
void for_tasks(int64_t tasks, bool parallel, const Body& body) {
  if (!parallel || tasks <= 1) {
    for (int64_t task = 0; task < tasks; ++task) body(task);
    return;
  }
  TaskJob<Body> job{&body};
  ThreadPool::shared().run(tasks, run_task<Body>, &job);
}

// body(first, last) over `parts` ranges covering [0, count).
template <class Body>
void for_ranges(int64_t count, int64_t parts, int64_t align, const Body& body) {
  if (count <= 0) return;
  for_tasks(parts, parts > 1, [&](int64_t k) {
    const int64_t first = part_start(count, parts, k, align);
    const int64_t last = part_start(count, parts, k + 1, align);
    if (first < last) body(first, last);
  });
}

// Element ranges start on 16-float (64-byte) boundaries: no two threads
// write the same cache line of an aligned buffer.
constexpr int64_t kElementAlign = 16;

// Elementwise work over n elements.
template <class Body>
void for_elements(int64_t n, const Exec& exec, const Body& body) {
  for_ranges(n, threads_for(n, n / kElementAlign, exec), kElementAlign, body);
}

// Rows of `cols` elements.
template <class Body>
void for_rows(int64_t rows, int64_t cols, const Exec& exec, const Body& body) {
  for_ranges(rows, threads_for(rows * cols, rows, exec), 1, body);
}

// Causal rows differ in length (1..S), so they are cut into more pieces than
// threads and handed out dynamically.
template <class Body>
void for_causal_rows(int64_t rows, int64_t work, const Exec& exec, const Body& body) {
  const int64_t threads = threads_for(work, rows, exec);
  for_ranges(rows, threads == 1 ? 1 : min64(rows, threads * 8), 1, body);
}

// Double scratch of the calling thread (the per-row loss terms, the dw
// blocks); nullptr when memory is short.
double* scratch_doubles(int64_t count) {
  static thread_local AlignedBuffer buffer;
  return reinterpret_cast<double*>(buffer.reserve(static_cast<size_t>(count) * 2));
}

// Rows per dw block of rmsnorm_backward: a function of R only.
constexpr int64_t kDwMaxBlocks = 32;
constexpr int64_t kDwMinRowsPerBlock = 16;

}  // namespace

Exec Exec::active() { return Exec{active_isa(), ThreadPool::shared().size()}; }

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t cols, float eps,
                     Exec exec) {
  if (cols <= 0) return;
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, cols, exec, [&](int64_t first, int64_t last) {
    k.rmsnorm_forward(x + first * cols, w, y + first * cols, rstd + first, last - first, cols, eps);
  });
}

void add_rmsnorm_forward(const float* x, const float* delta, float* s, const float* w, float* y, float* rstd,
                         int64_t rows, int64_t cols, float eps, Exec exec) {
  if (cols <= 0) return;
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, cols, exec, [&](int64_t first, int64_t last) {
    k.add_rmsnorm_forward(x + first * cols, delta + first * cols, s + first * cols, w, y + first * cols, rstd + first,
                          last - first, cols, eps);
  });
}

bool rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      int64_t rows, int64_t cols, Exec exec) {
  if (rows <= 0 || cols <= 0 || (dx == nullptr && dw == nullptr)) return true;
  const FusedKernels& k = kernels_for(exec.isa);
  const auto run_rows = [&](int64_t first, int64_t last, double* dw_partial) {
    k.rmsnorm_backward(x + first * cols, w, rstd + first, dy + first * cols,
                       dx == nullptr ? nullptr : dx + first * cols, dw_partial, last - first, cols);
  };
  if (dw == nullptr) {
    for_rows(rows, cols, exec, [&](int64_t first, int64_t last) { run_rows(first, last, nullptr); });
    return true;
  }
  // dw: each block of rows sums into its own row of doubles; the blocks are
  // then added in order. Blocks depend on R only, so dw is the same for any
  // thread count.
  const int64_t blocks =
      min64(kDwMaxBlocks, (rows + kDwMinRowsPerBlock - 1) / kDwMinRowsPerBlock);
  double* partial = scratch_doubles(blocks * cols);
  if (partial == nullptr) return false;
  const bool parallel = threads_for(rows * cols, rows, exec) > 1;
  for_tasks(blocks, parallel, [&](int64_t block) {
    double* mine = partial + block * cols;
    std::memset(mine, 0, static_cast<size_t>(cols) * sizeof(double));
    run_rows(part_start(rows, blocks, block, 1), part_start(rows, blocks, block + 1, 1), mine);
  });
  const int64_t reduce_threads = threads_for(blocks * cols, cols / kElementAlign, exec);
  for_ranges(cols, reduce_threads, kElementAlign, [&](int64_t first, int64_t last) {
    for (int64_t block = 1; block < blocks; ++block) {
      const double* theirs = partial + block * cols;
      for (int64_t c = first; c < last; ++c) partial[c] += theirs[c];
    }
    for (int64_t c = first; c < last; ++c) dw[c] += static_cast<float>(partial[c]);
  });
  return true;
}

void swiglu_forward(const float* gate, const float* up, float* y, int64_t n, Exec exec) {
  const FusedKernels& k = kernels_for(exec.isa);
  for_elements(n, exec, [&](int64_t first, int64_t last) {
    k.swiglu_forward(gate + first, up + first, y + first, last - first);
  });
}

void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n,
                     Exec exec) {
  if (dgate == nullptr && dup == nullptr) return;
  const FusedKernels& k = kernels_for(exec.isa);
  for_elements(n, exec, [&](int64_t first, int64_t last) {
    k.swiglu_backward(gate + first, up + first, dy + first, dgate == nullptr ? nullptr : dgate + first,
                      dup == nullptr ? nullptr : dup + first, last - first);
  });
}

void rope(const RopeArgs& args, Exec exec) {
  if (args.dim <= 0) return;
  const int64_t rows = args.batch * args.time * args.heads;
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, args.dim, exec, [&](int64_t first, int64_t last) { k.rope(args, first, last); });
}

void adamw(const AdamwArgs& args, Exec exec) {
  const FusedKernels& k = kernels_for(exec.isa);
  // 1 − β in double, rounded once.
  const float keep1 = static_cast<float>(1.0 - static_cast<double>(args.beta1));
  const float keep2 = static_cast<float>(1.0 - static_cast<double>(args.beta2));
  for_elements(args.n, exec, [&](int64_t first, int64_t last) { k.adamw(args, keep1, keep2, first, last); });
}

bool cross_entropy_forward(const float* logits, const int32_t* targets, float* lse, int64_t rows, int64_t vocab,
                           int32_t ignore_index, double* loss, Exec exec) {
  *loss = 0.0;
  if (rows <= 0) return true;
  double* row_loss = scratch_doubles(rows);
  if (row_loss == nullptr) return false;
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, vocab, exec, [&](int64_t first, int64_t last) {
    k.cross_entropy_forward(logits + first * vocab, targets + first, lse + first, row_loss + first, last - first,
                            vocab, ignore_index);
  });
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) total += row_loss[r];
  *loss = total;
  return true;
}

void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, float* dz, int64_t rows,
                            int64_t vocab, int32_t ignore_index, float scale, Exec exec) {
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, vocab, exec, [&](int64_t first, int64_t last) {
    k.cross_entropy_backward(logits + first * vocab, targets + first, lse + first, dz + first * vocab,
                             last - first, vocab, ignore_index, scale);
  });
}

bool kl_forward(const float* zT, const float* zS, float* lseT, float* lseS, float* rowKl, int64_t rows,
                int64_t vocab, float inv_tau, double* total, Exec exec) {
  *total = 0.0;
  if (rows <= 0) return true;
  double* row_kl = scratch_doubles(rows);
  if (row_kl == nullptr) return false;
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, vocab, exec, [&](int64_t first, int64_t last) {
    const int64_t at = first * vocab;
    k.kl_forward(zT + at, zS + at, lseT + first, lseS + first, rowKl + first, row_kl + first, last - first, vocab,
                 inv_tau);
  });
  double sum = 0.0;
  for (int64_t r = 0; r < rows; ++r) sum += row_kl[r];
  *total = sum;
  return true;
}

void kl_backward(const float* zT, const float* zS, const float* lseT, const float* lseS, const float* rowKl,
                 float* dT, float* dS, int64_t rows, int64_t vocab, float inv_tau, float g, Exec exec) {
  if (dT == nullptr && dS == nullptr) return;
  const FusedKernels& k = kernels_for(exec.isa);
  for_rows(rows, vocab, exec, [&](int64_t first, int64_t last) {
    const int64_t at = first * vocab;
    k.kl_backward(zT + at, zS + at, lseT + first, lseS + first, rowKl + first, dT == nullptr ? nullptr : dT + at,
                  dS == nullptr ? nullptr : dS + at, last - first, vocab, inv_tau, g);
  });
}

void causal_softmax_forward(const float* x, float* y, int64_t bh, int64_t t, int64_t s, int64_t offset,
                            Exec exec) {
  const int64_t rows = bh * t;
  if (rows <= 0 || s <= 0) return;
  // The kept columns are an ordinary softmax row (softmax_rows.h).
  const SoftmaxRows& softmax = softmax_rows_for(exec.isa);
  for_causal_rows(rows, rows * s, exec, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t valid = min64(s, offset + row % t + 1);
      softmax.forward(x + row * s, y + row * s, 1, valid);
      std::memset(y + row * s + valid, 0, static_cast<size_t>(s - valid) * sizeof(float));
    }
  });
}

void causal_softmax_backward(const float* y, const float* dy, float* dx, int64_t bh, int64_t t, int64_t s,
                             int64_t offset, bool accumulate, Exec exec) {
  const int64_t rows = bh * t;
  if (rows <= 0 || s <= 0) return;
  const FusedKernels& k = kernels_for(exec.isa);
  for_causal_rows(rows, rows * s, exec, [&](int64_t first, int64_t last) {
    k.causal_softmax_backward(y, dy, dx, first, last, t, s, offset, accumulate);
  });
}

void add_into(float* dst, const float* src, int64_t n, Exec exec) {
  const FusedKernels& k = kernels_for(exec.isa);
  for_elements(n, exec, [&](int64_t first, int64_t last) { k.add_into(dst + first, src + first, last - first); });
}

void add(const float* a, const float* b, float* out, int64_t n, Exec exec) {
  const FusedKernels& k = kernels_for(exec.isa);
  for_elements(n, exec, [&](int64_t first, int64_t last) { k.add(a + first, b + first, out + first, last - first); });
}

void fake_quant_forward(const FakeQuantArgs& args, Exec exec) {
  const int64_t n = args.rows * args.cols;
  if (n <= 0) return;
  const FusedKernels& k = kernels_for(exec.isa);
  const bool whole = args.granularity == QuantGranularity::kTensor ||
                     (args.granularity == QuantGranularity::kChannel && args.rows == 1);
  if (!whole) {
    int64_t span = args.granularity == QuantGranularity::kChannel ? args.cols : min64(args.group_size, args.cols);
    if (span < 1) span = 1;  // group_size ≥ 1 is the caller's to check; never divide by 0
    const int64_t groups = args.rows * ((args.cols + span - 1) / span);
    for_ranges(groups, threads_for(n, groups, exec), 1,
               [&](int64_t first, int64_t last) { k.fake_quant_groups(args, span, first, last); });
    return;
  }
  // One group: the minimum and maximum over element ranges (exact, so the
  // split does not matter), then the elements.
  constexpr int64_t kMaxParts = 64;
  const int64_t parts = min64(kMaxParts, threads_for(n, n / kElementAlign, exec));
  float lows[kMaxParts], highs[kMaxParts];
  for_tasks(parts, parts > 1, [&](int64_t part) {
    const int64_t first = part_start(n, parts, part, kElementAlign);
    const int64_t last = part_start(n, parts, part + 1, kElementAlign);
    lows[part] = kInfinityF;
    highs[part] = -kInfinityF;
    if (first < last) k.fake_quant_minmax(args.w + first, last - first, &lows[part], &highs[part]);
  });
  float lo = kInfinityF, hi = -kInfinityF;
  for (int64_t part = 0; part < parts; ++part) {
    if (lows[part] < lo) lo = lows[part];
    if (highs[part] > hi) hi = highs[part];
  }
  const FakeQuantStep step = k.fake_quant_step(lo, hi, args);
  for_elements(n, exec, [&](int64_t first, int64_t last) {
    k.fake_quant_apply(args.w + first, args.out + first, args.mask == nullptr ? nullptr : args.mask + first,
                       last - first, step);
  });
}

void fake_quant_backward(const float* dy, const uint8_t* mask, float* dw, int64_t n, Exec exec) {
  const FusedKernels& k = kernels_for(exec.isa);
  for_elements(n, exec, [&](int64_t first, int64_t last) {
    k.fake_quant_backward(dy + first, mask + first, dw + first, last - first);
  });
}

void sigmoid_with(const float* x, float* sig, int64_t n, Isa isa) { kernels_for(isa).sigmoid(x, sig, n); }

}  // namespace qkd
