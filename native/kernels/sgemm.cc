// Blocked, packed SGEMM driver (the GotoBLAS/BLIS loop nest, row-major).
//
// For one matrix, or one rectangle of it handed to one thread:
//
//   for pc in K by KC:                      (beta applies on the first pc only)
//     for ic in M by MC:
//       pack op(A)[ic:ic+mc, pc:pc+kc]      A block mc×kc, MR-row micro-panels (L3)
//       for jc in N by NC:
//         pack op(B)[pc:pc+kc, jc:jc+nc]    B panel kc×nc, NR-column micro-panels (L2)
//         for ir in mc by MR:               A micro-panel MR×kc stays in L1
//           for jr in nc by NR:             B micro-panels stream from L2
//             micro-kernel: C[ic+ir : +MR, jc+jr : +NR] (+)= A micro-panel · B micro-panel
//
// MC is large (~2000 rows), so each element of A and (for M ≤ MC) of B is
// packed exactly once; packing A per B panel instead cost ~10% at 2048².
//
// Packing absorbs both transpositions and zero-pads edge tiles, so the
// micro-kernels see one layout. Threads split C into rectangles (or take
// whole matrices of a batch); each packs what its rectangle needs into its
// own thread_local buffers, so threads never wait on each other.
//
// Products with a handful of rows or columns (M = 1 while decoding) go to
// the unpacked skinny path instead (gemm_skinny.h).
#include "sgemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "aligned_buffer.h"
#include "gemm_micro.h"
#include "gemm_skinny.h"
#include "thread_pool.h"

namespace qkd {
namespace {

// Below this many multiply-adds (batch*M*N*K) a call stays on the calling
// thread: waking the pool costs more than it saves.
constexpr double kMinParallelWork = 1 << 20;
// Each extra thread should get at least this much work.
constexpr double kMinWorkPerThread = 1 << 19;
// Packing one element costs roughly this many multiply-adds of kernel time.
constexpr double kPackCost = 8.0;
// Products with at most this many rows (or columns) of C take the skinny
// path (gemm_skinny.h): streaming the big operand once beats packing it.
// Measured on Zen 4 at 4096×4096: the dot-product form (big operand
// contiguous along K) wins up to 16 rows, the axpy form up to 4.
constexpr int64_t kSkinnyLimit = 4;
constexpr int64_t kSkinnyDotLimit = 16;
// Column chunks of the skinny path handed to threads are multiples of this.
constexpr int64_t kSkinnyChunk = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

const MicroKernel& kernel_for(Isa isa) {
  const MicroKernel* kernel = nullptr;
  if (isa == Isa::kAvx512) kernel = avx512_micro_kernel();
  if (isa == Isa::kAvx2) kernel = avx2_micro_kernel();
  if (kernel == nullptr) kernel = portable_micro_kernel();
  return *kernel;
}

struct PackBuffers {
  AlignedBuffer a_block;
  AlignedBuffer b_panel;
};

// C = beta * C for one matrix: the whole answer when alpha == 0 or K == 0.
void scale_c(float* c, int64_t m, int64_t n, int64_t ldc, float beta) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) {
      std::fill(row, row + n, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

// Computes rows [m0, m1) × columns [n0, n1) of matrix `index` of the batch.
// False if the packing buffers could not be allocated.
bool gemm_rectangle(const MicroKernel& uk, const SgemmArgs& g, int64_t index, int64_t m0,
                    int64_t m1, int64_t n0, int64_t n1) {
  thread_local PackBuffers buffers;
  const float* a = g.a + index * g.stride_a;
  const float* b = g.b + index * g.stride_b;
  float* c = g.c + index * g.stride_c;
  const int64_t mr = uk.mr, nr = uk.nr;

  // Even block sizes: K = 257 becomes 129 + 128, not 256 + a lone column.
  const int64_t k_blocks = ceil_div(g.k, uk.kc);
  const int64_t kc_step = ceil_div(g.k, k_blocks);
  const int64_t n_blocks = ceil_div(n1 - n0, uk.nc);
  const int64_t nc_step = round_up(ceil_div(n1 - n0, n_blocks), nr);
  const int64_t m_blocks = ceil_div(m1 - m0, uk.mc);
  const int64_t mc_step = round_up(ceil_div(m1 - m0, m_blocks), mr);

  float* a_block = buffers.a_block.reserve(static_cast<size_t>(mc_step * kc_step));
  float* b_panel = buffers.b_panel.reserve(static_cast<size_t>(nc_step * kc_step));
  if (a_block == nullptr || b_panel == nullptr) return false;

  for (int64_t pc = 0; pc < g.k; pc += kc_step) {
    const int64_t kc = std::min(kc_step, g.k - pc);
    const float beta = pc == 0 ? g.beta : 1.0f;
    for (int64_t ic = m0; ic < m1; ic += mc_step) {
      const int64_t mc = std::min(mc_step, m1 - ic);
      for (int64_t ir = 0; ir < mc; ir += mr) {
        uk.pack_a(a, g.lda, g.trans_a, ic + ir, std::min(mr, mc - ir), pc, kc, a_block + ir * kc);
      }
      for (int64_t jc = n0; jc < n1; jc += nc_step) {
        const int64_t nc = std::min(nc_step, n1 - jc);
        uk.pack_b(b, g.ldb, g.trans_b, pc, kc, jc, nc, b_panel);
        for (int64_t ir = 0; ir < mc; ir += mr) {
          const int rows = static_cast<int>(std::min(mr, mc - ir));
          float* c_row = c + (ic + ir) * g.ldc + jc;
          for (int64_t jr = 0; jr < nc; jr += nr) {
            const int cols = static_cast<int>(std::min(nr, nc - jr));
            uk.compute(kc, a_block + ir * kc, b_panel + jr * kc, c_row + jr, g.ldc, g.alpha, beta,
                       rows, cols);
          }
        }
      }
    }
  }
  return true;
}

// How one matrix is cut into parts_m × parts_n rectangles along tile edges.
struct Split {
  int64_t parts_m = 1;
  int64_t parts_n = 1;
};

// Picks the grid of at most `parts` rectangles that minimises the slowest
// rectangle's kernel time plus its packing time.
Split choose_split(const MicroKernel& uk, int64_t m, int64_t n, int64_t k, int64_t parts) {
  const int64_t tiles_m = ceil_div(m, uk.mr), tiles_n = ceil_div(n, uk.nr);
  Split best;
  double best_cost = INFINITY;
  for (int64_t total = parts; total >= 1; --total) {
    for (int64_t pm = 1; pm <= total; ++pm) {
      if (total % pm != 0) continue;
      const int64_t pn = total / pm;
      if (pm > tiles_m || pn > tiles_n) continue;
      const double rows = static_cast<double>(ceil_div(tiles_m, pm) * uk.mr);
      const double cols = static_cast<double>(ceil_div(tiles_n, pn) * uk.nr);
      const double repacks_of_b = std::ceil(rows / uk.mc);
      const double cost = rows * cols * k + kPackCost * (rows * k + cols * k * repacks_of_b);
      if (cost < best_cost) {
        best_cost = cost;
        best.parts_m = pm;
        best.parts_n = pn;
      }
    }
  }
  return best;
}

struct ParallelJob {
  const MicroKernel* uk;
  const SgemmArgs* args;
  int64_t first_matrix;  // batch index of task 0's matrix
  Split split;
  std::atomic<bool> failed{false};
};

void run_part(void* context, int64_t task, int /*worker*/) {
  ParallelJob& job = *static_cast<ParallelJob*>(context);
  const SgemmArgs& g = *job.args;
  const int64_t parts = job.split.parts_m * job.split.parts_n;
  const int64_t index = job.first_matrix + task / parts;
  const int64_t part = task % parts;
  const int64_t pm = part / job.split.parts_n, pn = part % job.split.parts_n;
  const int64_t tiles_m = ceil_div(g.m, job.uk->mr), tiles_n = ceil_div(g.n, job.uk->nr);
  const int64_t m0 = std::min(g.m, pm * tiles_m / job.split.parts_m * job.uk->mr);
  const int64_t m1 = std::min(g.m, (pm + 1) * tiles_m / job.split.parts_m * job.uk->mr);
  const int64_t n0 = std::min(g.n, pn * tiles_n / job.split.parts_n * job.uk->nr);
  const int64_t n1 = std::min(g.n, (pn + 1) * tiles_n / job.split.parts_n * job.uk->nr);
  if (m0 < m1 && n0 < n1 && !gemm_rectangle(*job.uk, g, index, m0, m1, n0, n1)) {
    job.failed.store(true, std::memory_order_relaxed);
  }
}

int64_t gcd(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// The skinny path, one matrix of the batch per call: C = op(A)·op(B)
// directly, or as the transposed product C^T = op(B)^T·op(A)^T written
// through C's strides, so that the skinny side is always "rows".
// Whether C = op(A)·op(B) (by rows) or C^T = op(B)^T·op(A)^T (by columns)
// suits the skinny path; by rows, the big operand B is read along K when
// trans_b, by columns A is read along K when !trans_a.
bool skinny_rows_fit(const SgemmArgs& g) { return g.m <= (g.trans_b ? kSkinnyDotLimit : kSkinnyLimit); }
bool skinny_columns_fit(const SgemmArgs& g) { return g.n <= (!g.trans_a ? kSkinnyDotLimit : kSkinnyLimit); }
bool use_skinny(const SgemmArgs& g) { return skinny_rows_fit(g) || skinny_columns_fit(g); }
bool skinny_by_rows(const SgemmArgs& g) {
  if (skinny_rows_fit(g) && skinny_columns_fit(g)) return g.m <= g.n;
  return skinny_rows_fit(g);
}

SkinnyProblem skinny_problem(const SgemmArgs& g, int64_t index) {
  const float* a = g.a + index * g.stride_a;
  const float* b = g.b + index * g.stride_b;
  float* c = g.c + index * g.stride_c;
  if (skinny_by_rows(g)) {
    return {g.m, g.n, g.k, g.alpha, g.beta, {a, g.lda, g.trans_a}, {b, g.ldb, g.trans_b}, c, g.ldc, 1};
  }
  return {g.n, g.m, g.k, g.alpha, g.beta, {b, g.ldb, !g.trans_b}, {a, g.lda, !g.trans_a}, c, 1, g.ldc};
}

struct SkinnyJob {
  const SgemmArgs* args;
  Isa isa;
  int64_t first_matrix;
  int64_t parts;  // column chunks per matrix
  std::atomic<bool> failed{false};
};

void run_skinny_part(void* context, int64_t task, int /*worker*/) {
  SkinnyJob& job = *static_cast<SkinnyJob*>(context);
  const SkinnyProblem p = skinny_problem(*job.args, job.first_matrix + task / job.parts);
  const int64_t part = task % job.parts;
  const int64_t chunks = ceil_div(p.cols, kSkinnyChunk);
  const int64_t j0 = std::min(p.cols, part * chunks / job.parts * kSkinnyChunk);
  const int64_t j1 = std::min(p.cols, (part + 1) * chunks / job.parts * kSkinnyChunk);
  if (j0 < j1 && !skinny_gemm(p, j0, j1, job.isa)) job.failed.store(true, std::memory_order_relaxed);
}

}  // namespace

bool sgemm_with(const SgemmArgs& g, Isa isa, int max_threads) {
  if (g.batch <= 0 || g.m <= 0 || g.n <= 0) return true;
  if (g.k <= 0 || g.alpha == 0.0f) {
    for (int64_t i = 0; i < g.batch; ++i) scale_c(g.c + i * g.stride_c, g.m, g.n, g.ldc, g.beta);
    return true;
  }
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  const bool skinny = use_skinny(g);
  const MicroKernel& uk = kernel_for(isa);
  ThreadPool* pool = nullptr;
  const double work_per_matrix = static_cast<double>(g.m) * static_cast<double>(g.n) * g.k;
  const double work = work_per_matrix * g.batch;
  int64_t threads = 1;
  if (max_threads > 1 && work >= kMinParallelWork) {
    pool = &ThreadPool::shared();
    threads = std::min<int64_t>(std::min(max_threads, pool->size()),
                                std::max<int64_t>(1, static_cast<int64_t>(work / kMinWorkPerThread)));
  }

  // Matrices whose C overlap (stride_c too small) must run one after another.
  const int64_t c_extent = (g.m - 1) * g.ldc + g.n;
  const bool independent = g.batch == 1 || g.stride_c >= c_extent;

  if (threads <= 1) {
    for (int64_t i = 0; i < g.batch; ++i) {
      if (skinny) {
        const SkinnyProblem p = skinny_problem(g, i);
        if (!skinny_gemm(p, 0, p.cols, isa)) return false;
      } else if (!gemm_rectangle(uk, g, i, 0, g.m, 0, g.n)) {
        return false;
      }
    }
    return true;
  }

  // Parts per matrix: enough that the batch's tasks spread evenly over the
  // threads (batch 3 on 2 threads -> 2 parts each), but a large batch just
  // hands out whole matrices.
  int64_t parts = threads / gcd(independent ? g.batch : 1, threads);
  if (independent && g.batch >= 4 * threads) parts = 1;
  parts = std::min<int64_t>(parts, std::max<int64_t>(1, static_cast<int64_t>(work_per_matrix / kMinWorkPerThread)));

  if (skinny) {
    SkinnyJob job;
    job.args = &g;
    job.isa = isa;
    job.first_matrix = 0;
    job.parts = std::min(parts, ceil_div(skinny_by_rows(g) ? g.n : g.m, kSkinnyChunk));
    if (independent) {
      pool->run(g.batch * job.parts, run_skinny_part, &job);
    } else {
      for (int64_t i = 0; i < g.batch; ++i) {
        job.first_matrix = i;
        pool->run(job.parts, run_skinny_part, &job);
      }
    }
    return !job.failed.load();
  }

  ParallelJob job;
  job.uk = &uk;
  job.args = &g;
  job.first_matrix = 0;
  job.split = choose_split(uk, g.m, g.n, g.k, parts);
  const int64_t tasks_per_matrix = job.split.parts_m * job.split.parts_n;
  if (independent) {
    pool->run(g.batch * tasks_per_matrix, run_part, &job);
  } else {
    for (int64_t i = 0; i < g.batch; ++i) {
      job.first_matrix = i;
      pool->run(tasks_per_matrix, run_part, &job);
    }
  }
  return !job.failed.load();
}

bool sgemm(const SgemmArgs& args) {
  return sgemm_with(args, active_isa(), ThreadPool::shared().size());
}

}  // namespace qkd
