// Driver of the bf16 GEMM (gemm_bf16.h).
//
// Dot-product path, in two parallel phases:
//   1. B is rounded and packed once, whole (k-pairs × 32-column micro-panels),
//      into the caller's scratch; every task reads it.
//   2. Tasks take runs of 14-row tiles of C and walk K in chunks of
//      kChunkPairs k-pairs. When A is transposed (a tile is a narrow column
//      strip of every row of A) or B is large, the chunk loop is outermost
//      and the whole run of tiles is packed per chunk (row pair by row pair,
//      so each row of A is read once, from L1); otherwise each tile packs
//      its A micro-panel right before use and runs through all of K, its C
//      tile staying in L1. A micro-panel is used once per 32-column panel
//      of B, usually just once: B is a thin block of vectors. With a
//      transposed C (a frozen Linear's y) each tile takes all of K in one
//      chunk, so its transposed store happens once.
//
// Fallback path: K is cut into blocks; each block of A is widened to float32
// and of B rounded to bf16 values, and the float32 SGEMM accumulates.
#include "gemm_bf16.h"
#include "half.h"

#include <algorithm>
#include <atomic>

#include "aligned_buffer.h"
#include "sgemm.h"
#include "thread_pool.h"

#if QKD_X86
#include <immintrin.h>
#endif

namespace qkd {
namespace {

constexpr int64_t kChunkPairs = 128;        // k-pairs of A per packed micro-panel
constexpr int64_t kPackBPairs = 512;        // k-pairs of B per packing task
constexpr double kMinParallelWork = 1 << 20;  // multiply-adds below which one thread runs
constexpr double kMinWorkPerThread = 1 << 19;
constexpr int64_t kTasksPerThread = 4;       // row tasks per thread (balance under load)
constexpr int64_t kL2Bytes = 512 * 1024;     // B bigger than this: chunk loop outermost
constexpr int64_t kFallbackBlock = 1 << 22;  // floats of widened A per fallback block
constexpr int64_t kSplitKRatio = 8;          // Aᵀ with K ≥ this × M: threads split K
constexpr int64_t kSmallPackB = 1 << 16;     // packed B dwords the caller packs alone

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void zero_c(const Bf16GemmArgs& g) {
  if (g.accumulate) return;
  const int64_t rows = g.trans_c ? g.n : g.m, cols = g.trans_c ? g.m : g.n;
  for (int64_t i = 0; i < rows; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + cols, 0.0f);
}

struct DotJob {
  const Bf16DotKernel* uk;
  const Bf16GemmArgs* g;
  uint32_t* bp;         // packed B: n_panels × pairs × nr dwords
  int64_t pairs;        // ceil(K / 2)
  int64_t n_panels;     // ceil(N / nr)
  int64_t tiles;        // ceil(M / mr)
  int64_t row_parts;    // tasks split the tiles into this many runs ...
  int64_t k_parts;      // ... and the k-pairs into this many ranges
  float* partial;       // k_parts − 1 partial results (M×N each) for k ranges 1..
  bool chunk_outer;
  int64_t chunk_pairs;  // k-pairs per packed A micro-panel (kChunkPairs, or all of K for a transposed C)
  std::atomic<bool> failed{false};
};

void pack_b_task(void* context, int64_t task, int /*worker*/) {
  DotJob& job = *static_cast<DotJob*>(context);
  const Bf16GemmArgs& g = *job.g;
  const int64_t chunks = ceil_div(job.pairs, kPackBPairs);
  const int64_t panel = task / chunks, p0 = (task % chunks) * kPackBPairs;
  const int64_t pairs = std::min(kPackBPairs, job.pairs - p0);
  const int64_t col = panel * job.uk->nr;
  job.uk->pack_b(g.b, g.ldb, g.trans_b, g.k, 2 * p0, pairs, col, std::min<int64_t>(job.uk->nr, g.n - col),
                 job.bp + (panel * job.pairs + p0) * job.uk->nr);
}

// Where a task writes: C itself for the first k range, else a partial buffer.
struct Output {
  float* c;
  int64_t ldc;
  int64_t first_pair;  // the k range's start: the chunk there overwrites ...
  bool accumulate;     // ... unless this is C and the call accumulates
  bool transposed;     // (m, n) at c[n*ldc + m] (C with trans_c; partial buffers never)

  float* at(int64_t row, int64_t col) const { return transposed ? c + col * ldc + row : c + row * ldc + col; }
};

// The part of A that packing tiles [t0, t1) × k-pairs [p0, p0+pairs) reads:
// `lines_per_row` cache lines from each of `count` rows of A.
struct Region {
  const char* first = nullptr;
  int64_t row_bytes = 0;  // distance between rows of A
  int64_t count = 0;
  int64_t lines_per_row = 0;
};

Region region_of(const DotJob& job, int64_t t0, int64_t t1, int64_t p0, int64_t pairs) {
  const Bf16GemmArgs& g = *job.g;
  const int64_t row0 = t0 * job.uk->mr, rows = std::min(t1 * job.uk->mr, g.m) - row0;
  const int64_t k0 = 2 * p0, ks = std::min(2 * pairs, g.k - k0);
  Region r;
  if (ks <= 0 || rows <= 0) return r;
  r.row_bytes = g.lda * 2;
  if (g.trans_a) {  // A rows k0.., columns row0..
    r.first = reinterpret_cast<const char*>(g.a + k0 * g.lda + row0);
    r.count = ks;
    r.lines_per_row = ceil_div(rows * 2, 64) + 1;
  } else {  // A rows row0.., columns k0..
    r.first = reinterpret_cast<const char*>(g.a + row0 * g.lda + k0);
    r.count = rows;
    r.lines_per_row = ceil_div(ks * 2, 64) + 1;
  }
  return r;
}

// Pulls the next region of A into L2 a slice at a time while the current
// tiles compute, so that reading A from memory overlaps the dot products
// (packing alone would otherwise wait on DRAM: an embedding's rows are far
// beyond L3).
// The position is kept as (row, line) and stepped: deriving it from a
// running count took a 64-bit division per line.
struct Prefetcher {
  Region region;
  int64_t row = 0, line = 0;  // the next line to issue
  void slice(int64_t lines) {
    for (; lines > 0 && row < region.count; --lines) {
      __builtin_prefetch(region.first + row * region.row_bytes + line * 64, 0, 2);
      if (++line == region.lines_per_row) {
        line = 0;
        ++row;
      }
    }
  }
};

// Tiles [t0, t1) of the output over k-pairs [p0, p0+pairs), all B panels;
// ap holds their packed A micro-panels. `next` is what the following call
// will pack.
void tiles_chunk(const DotJob& job, const Output& out, uint32_t* ap, int64_t t0, int64_t t1, int64_t p0,
                 int64_t pairs, const Region& next) {
  const Bf16GemmArgs& g = *job.g;
  const Bf16DotKernel& uk = *job.uk;
  const int64_t row0 = t0 * uk.mr, rows = std::min(t1 * uk.mr, g.m) - row0;
  uk.pack_a(g.a, g.lda, g.trans_a, g.k, row0, rows, 2 * p0, pairs, ap);
  Prefetcher prefetch{next};
  const int64_t calls = (t1 - t0) * job.n_panels;
  const int64_t per_call = ceil_div(next.count * next.lines_per_row, calls);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = t * uk.mr;
    const int m_valid = static_cast<int>(std::min<int64_t>(uk.mr, g.m - row));
    const uint32_t* panel_a = ap + (t - t0) * uk.mr * pairs;
    for (int64_t panel = 0; panel < job.n_panels; ++panel) {
      prefetch.slice(per_call);
      const int64_t col = panel * uk.nr;
      const int n_valid = static_cast<int>(std::min<int64_t>(uk.nr, g.n - col));
      uk.compute(pairs, panel_a, job.bp + (panel * job.pairs + p0) * uk.nr, out.at(row, col), out.ldc,
                 out.accumulate || p0 > out.first_pair, m_valid, n_valid, out.transposed);
    }
  }
}

// Task (row run, k range): its tiles over its k-pairs.
void rectangle_task(void* context, int64_t task, int /*worker*/) {
  thread_local AlignedBuffer a_block;
  DotJob& job = *static_cast<DotJob*>(context);
  const Bf16GemmArgs& g = *job.g;
  const int64_t mr = job.uk->mr;
  const int64_t run = task % job.row_parts, range = task / job.row_parts;
  const int64_t t0 = run * job.tiles / job.row_parts, t1 = (run + 1) * job.tiles / job.row_parts;
  // k ranges start on chunk boundaries, so the chunks are those of one range.
  const int64_t chunks = ceil_div(job.pairs, job.chunk_pairs);
  const int64_t p_begin = std::min(job.pairs, range * chunks / job.k_parts * job.chunk_pairs);
  const int64_t p_end = std::min(job.pairs, (range + 1) * chunks / job.k_parts * job.chunk_pairs);
  if (t0 >= t1 || p_begin >= p_end) return;
  const Output out = range == 0 ? Output{g.c, g.ldc, p_begin, g.accumulate, g.trans_c}
                                : Output{job.partial + (range - 1) * g.m * g.n, g.n, p_begin, false, false};
  const int64_t block_tiles = job.chunk_outer ? t1 - t0 : 1;
  uint32_t* ap = reinterpret_cast<uint32_t*>(a_block.reserve(static_cast<size_t>(block_tiles * mr * job.chunk_pairs)));
  if (ap == nullptr) {
    job.failed.store(true, std::memory_order_relaxed);
    return;
  }
  if (job.chunk_outer) {
    for (int64_t p0 = p_begin; p0 < p_end; p0 += job.chunk_pairs) {
      const int64_t p1 = std::min(p0 + job.chunk_pairs, p_end);
      const Region next = p1 < p_end ? region_of(job, t0, t1, p1, std::min(job.chunk_pairs, p_end - p1)) : Region{};
      tiles_chunk(job, out, ap, t0, t1, p0, p1 - p0, next);
    }
  } else {
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t p0 = p_begin; p0 < p_end; p0 += job.chunk_pairs) {
        const int64_t p1 = std::min(p0 + job.chunk_pairs, p_end);
        Region next;
        if (p1 < p_end) {
          next = region_of(job, t, t + 1, p1, std::min(job.chunk_pairs, p_end - p1));
        } else if (t + 1 < t1) {
          next = region_of(job, t + 1, t + 2, p_begin, std::min(job.chunk_pairs, p_end - p_begin));
        }
        tiles_chunk(job, out, ap, t, t + 1, p0, p1 - p0, next);
      }
    }
  }
}

// The thin products (Bf16DotKernel::thin_rows, thin_columns): tasks of whole strips of op(A)'s rows, mr of them
// (A·B) or 16 (Aᵀ·B: 16 columns of A).
struct ThinJob {
  const Bf16DotKernel* uk;
  const Bf16GemmArgs* g;
  const uint32_t* bp;
  int64_t strips, tasks;
  std::atomic<bool>* failed;
};

constexpr int64_t kThinBlockPairs = 64;  // k-pairs of A's rows walked once for all of a task's strips

void thin_task(void* context, int64_t task, int /*worker*/) {
  thread_local AlignedBuffer sums;
  const ThinJob& job = *static_cast<ThinJob*>(context);
  const Bf16GemmArgs& g = *job.g;
  const int64_t s0 = task * job.strips / job.tasks, s1 = (task + 1) * job.strips / job.tasks;
  if (!g.trans_a) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t row = job.uk->mr * s;
      job.uk->thin_rows(g.a, g.lda, g.k, row, static_cast<int>(std::min<int64_t>(job.uk->mr, g.m - row)), job.bp,
                        g.c + row * g.ldc, g.ldc, g.accumulate, static_cast<int>(g.n));
    }
    return;
  }
  // Aᵀ: k-blocks outermost, each strip's 16 × 16 sums kept in `sums` between them.
  float* acc = sums.reserve(static_cast<size_t>(256 * (s1 - s0)));
  if (acc == nullptr) {
    job.failed->store(true, std::memory_order_relaxed);
    return;
  }
  std::fill(acc, acc + 256 * (s1 - s0), 0.0f);
  const int64_t pairs = ceil_div(g.k, 2);
  for (int64_t p0 = 0; p0 < pairs; p0 += kThinBlockPairs) {
    const int64_t p1 = std::min(pairs, p0 + kThinBlockPairs);
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t row = 16 * s;
      job.uk->thin_columns(g.a, g.lda, g.k, row, static_cast<int>(std::min<int64_t>(16, g.m - row)), job.bp, p0, p1,
                           acc + 256 * (s - s0));
    }
  }
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t row = 16 * s;
    job.uk->thin_columns_store(acc + 256 * (s - s0), g.c + row * g.ldc, g.ldc, g.accumulate,
                               static_cast<int>(std::min<int64_t>(16, g.m - row)), static_cast<int>(g.n));
  }
}

constexpr int64_t kReduceTasks = 16;

// C += the partial results, in range order (the sum does not depend on timing).
void reduce_task(void* context, int64_t task, int /*worker*/) {
  DotJob& job = *static_cast<DotJob*>(context);
  const Bf16GemmArgs& g = *job.g;
  const int64_t parts = std::min(g.m, kReduceTasks);
  const int64_t r0 = task * g.m / parts, r1 = (task + 1) * g.m / parts;
  for (int64_t q = 1; q < job.k_parts; ++q) {
    const float* src = job.partial + (q - 1) * g.m * g.n;
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < g.n; ++j) g.c[r * g.ldc + j] += src[r * g.n + j];
    }
  }
}

int64_t thread_count(const Bf16GemmArgs& g, int max_threads) {
  const double work = static_cast<double>(g.m) * static_cast<double>(g.n) * static_cast<double>(g.k);
  if (max_threads <= 1 || work < kMinParallelWork) return 1;
  const int64_t pool = ThreadPool::shared().size();
  return std::min<int64_t>(std::min<int64_t>(max_threads, pool),
                           std::max<int64_t>(1, static_cast<int64_t>(work / kMinWorkPerThread)));
}

void run_tasks(int64_t threads, int64_t count, TaskFn fn, void* context) {
  if (threads > 1) {
    ThreadPool::shared().run(count, fn, context);
  } else {
    for (int64_t t = 0; t < count; ++t) fn(context, t, 0);
  }
}

bool dot_path(const Bf16DotKernel& uk, const Bf16GemmArgs& g, int max_threads) {
  thread_local AlignedBuffer b_packed, partials;
  DotJob job;
  job.uk = &uk;
  job.g = &g;
  job.pairs = ceil_div(g.k, 2);
  job.n_panels = ceil_div(g.n, uk.nr);
  job.tiles = ceil_div(g.m, uk.mr);
  const int64_t b_dwords = job.n_panels * job.pairs * uk.nr;
  job.bp = reinterpret_cast<uint32_t*>(b_packed.reserve(static_cast<size_t>(b_dwords)));
  if (job.bp == nullptr) return false;
  // A transposed C is written with transposes in registers and scattered
  // 14-float stores, so each tile runs through all of K in one call (its A
  // micro-panel then streams from L2, which the 28 dot products per k-pair
  // step easily hide) and its store happens once instead of once per chunk.
  job.chunk_outer = !g.trans_c && (g.trans_a || b_dwords * 4 > kL2Bytes);
  job.chunk_pairs = g.trans_c ? job.pairs : kChunkPairs;
  const int64_t threads = thread_count(g, max_threads);
  // A transposed and much longer than wide (an embedding's Wᵀ·U): threads
  // split K, so each streams whole rows of A instead of a narrow strip of
  // every row (strided, a new page every row or two). (Not with a transposed
  // C, which the reduction does not write.)
  const bool split_k = threads > 1 && g.trans_a && !g.trans_c && g.k >= kSplitKRatio * g.m &&
                       ceil_div(job.pairs, kChunkPairs) >= threads;
  job.k_parts = split_k ? threads : 1;
  job.row_parts = threads > 1 && !split_k ? std::min(job.tiles, threads * kTasksPerThread) : 1;
  job.partial = nullptr;
  if (job.k_parts > 1) {
    job.partial = partials.reserve(static_cast<size_t>((job.k_parts - 1) * g.m * g.n));
    if (job.partial == nullptr) return false;
  }
  // A small B (the usual thin block) is packed by the caller: a pool job of
  // its own costs more than the packing.
  const int64_t pack_tasks = job.n_panels * ceil_div(job.pairs, kPackBPairs);
  run_tasks(b_dwords <= kSmallPackB ? 1 : threads, pack_tasks, pack_b_task, &job);
  if (uk.thin_columns != nullptr && !g.trans_c && g.n <= 16 && !split_k && g.k > 0) {
    // A or Aᵀ times a block of at most 16 columns (the profiler's Krylov steps): A read in place, not packed
    // (BENCHMARKS.md, "Thin products without packing").
    ThinJob thin{&uk, &g, job.bp, ceil_div(g.m, g.trans_a ? 16 : uk.mr), 0, &job.failed};
    thin.tasks = std::min(thin.strips, threads > 1 ? threads * kTasksPerThread : 1);
    run_tasks(threads, thin.tasks, thin_task, &thin);
    return !job.failed.load();
  }
  run_tasks(threads, job.row_parts * job.k_parts, rectangle_task, &job);
  if (job.k_parts > 1) run_tasks(threads, std::min(g.m, kReduceTasks), reduce_task, &job);
  return !job.failed.load();
}

// Widens A and rounds B block by block along K and lets the float32 SGEMM
// accumulate: the same products (exact in float32), another summation order.
bool fallback_path(const Bf16GemmArgs& g, Isa isa, int max_threads) {
  thread_local AlignedBuffer a_wide, b_rounded;
  const int64_t block = std::max<int64_t>(2, std::min<int64_t>(g.k, kFallbackBlock / std::max<int64_t>(1, g.m)));
  float* a32 = a_wide.reserve(static_cast<size_t>(g.m * block));
  float* b32 = b_rounded.reserve(static_cast<size_t>(g.n * block));
  if (a32 == nullptr || b32 == nullptr) return false;
  for (int64_t k0 = 0; k0 < g.k; k0 += block) {
    const int64_t kb = std::min(block, g.k - k0);
    // Widened block of A in its stored orientation, compact.
    if (g.trans_a) {
      for (int64_t k = 0; k < kb; ++k) {
        const uint16_t* src = g.a + (k0 + k) * g.lda;
        for (int64_t m = 0; m < g.m; ++m) a32[k * g.m + m] = bf16_bits_to_float(src[m]);
      }
    } else {
      for (int64_t m = 0; m < g.m; ++m) {
        const uint16_t* src = g.a + m * g.lda + k0;
        for (int64_t k = 0; k < kb; ++k) a32[m * kb + k] = bf16_bits_to_float(src[k]);
      }
    }
    // Rounded block of op(B), compact [kb, N].
    for (int64_t k = 0; k < kb; ++k) {
      for (int64_t n = 0; n < g.n; ++n) {
        const float v = g.trans_b ? g.b[n * g.ldb + k0 + k] : g.b[(k0 + k) * g.ldb + n];
        b32[k * g.n + n] = bf16_bits_to_float(float_to_bf16_bits(v));
      }
    }
    SgemmArgs s;
    if (g.trans_c) {
      // Cᵀ [N, M] = op(B)ᵀ · op(A)ᵀ: b32 [kb, N] transposed, then the widened A block.
      s.trans_a = true;
      s.m = g.n;
      s.n = g.m;
      s.a = b32;
      s.lda = g.n;
      s.trans_b = !g.trans_a;  // a32 is [M, kb] (op(A)ᵀ is its transpose) or [kb, M] (already op(A)ᵀ)
      s.b = a32;
      s.ldb = g.trans_a ? g.m : kb;
    } else {
      s.trans_a = g.trans_a;
      s.m = g.m;
      s.n = g.n;
      s.a = a32;
      s.lda = g.trans_a ? g.m : kb;
      s.b = b32;
      s.ldb = g.n;
    }
    s.k = kb;
    s.beta = k0 == 0 && !g.accumulate ? 0.0f : 1.0f;
    s.c = g.c;
    s.ldc = g.ldc;
    if (!sgemm_with(s, isa, max_threads)) return false;
  }
  return true;
}

constexpr int64_t kConvertChunk = 1 << 16;  // elements per conversion task

#if QKD_X86
// 16 floats → 16 bf16 with integer arithmetic, bit-identical to
// float_to_bf16_bits (vcvtneps2bf16 would flush subnormals to zero).
QKD_TARGET_AVX512 void convert_avx512(const float* src, uint16_t* dst, int64_t n) {
  const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  const __m512i exponent = _mm512_set1_epi32(0x7f800000), mantissa = _mm512_set1_epi32(0x007fffff);
  const __m512i quiet = _mm512_set1_epi32(0x0040);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
    const __m512i bits = _mm512_maskz_loadu_epi32(m, src + i);
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(bits, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(bits, 16), one))), 16);
    const __mmask16 nan = _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, exponent), exponent) &
                          _mm512_test_epi32_mask(bits, mantissa);
    const __m512i result = _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(bits, 16), quiet);
    _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtepi32_epi16(result));
  }
}
#endif

#if QKD_X86
// 16 halves → 16 floats with vcvtph2ps (exact).
QKD_TARGET_AVX512 void widen_half_avx512(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
    const __m256i halves = _mm256_maskz_loadu_epi16(m, src + i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(halves));
  }
}
#endif

struct WidenJob {
  const uint16_t* src;
  float* dst;
  int64_t n;
  Isa isa;
};

void widen_task(void* context, int64_t task, int /*worker*/) {
  const WidenJob& job = *static_cast<const WidenJob*>(context);
  const int64_t first = task * kConvertChunk, count = std::min(kConvertChunk, job.n - first);
#if QKD_X86
  if (job.isa == Isa::kAvx512) {
    widen_half_avx512(job.src + first, job.dst + first, count);
    return;
  }
#endif
  for (int64_t i = 0; i < count; ++i) job.dst[first + i] = half_bits_to_float(job.src[first + i]);
}

void convert_portable(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16_bits(src[i]);
}

struct ConvertJob {
  const float* src;
  uint16_t* dst;
  int64_t n;
  Isa isa;
};

void convert_task(void* context, int64_t task, int /*worker*/) {
  const ConvertJob& job = *static_cast<const ConvertJob*>(context);
  const int64_t first = task * kConvertChunk, count = std::min(kConvertChunk, job.n - first);
#if QKD_X86
  if (job.isa == Isa::kAvx512) {
    convert_avx512(job.src + first, job.dst + first, count);
    return;
  }
#endif
  convert_portable(job.src + first, job.dst + first, count);
}

}  // namespace

void float_to_bf16_with(const float* src, uint16_t* dst, int64_t n, Isa isa, int max_threads) {
  if (n <= 0) return;
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  ConvertJob job{src, dst, n, isa};
  const int64_t tasks = ceil_div(n, kConvertChunk);
  run_tasks(max_threads > 1 ? max_threads : 1, tasks, convert_task, &job);
}

void half_to_float_with(const uint16_t* src, float* dst, int64_t n, Isa isa, int max_threads) {
  if (n <= 0) return;
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  WidenJob job{src, dst, n, isa};
  run_tasks(max_threads > 1 ? max_threads : 1, ceil_div(n, kConvertChunk), widen_task, &job);
}

void bf16_to_float(const uint16_t* src, float* dst, int64_t n) {
  uint32_t* to = reinterpret_cast<uint32_t*>(dst);
  for (int64_t i = 0; i < n; ++i) to[i] = static_cast<uint32_t>(src[i]) << 16;
}

void half_to_float(const uint16_t* src, float* dst, int64_t n) {
  half_to_float_with(src, dst, n, active_isa(), ThreadPool::shared().size());
}

void float_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  float_to_bf16_with(src, dst, n, active_isa(), ThreadPool::shared().size());
}

bool bf16_gemm_with(const Bf16GemmArgs& g, Isa isa, int max_threads, bool use_dot) {
  if (g.m <= 0 || g.n <= 0) return true;
  if (g.k <= 0) {
    zero_c(g);
    return true;
  }
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  const Bf16DotKernel* uk = avx512_bf16_dot_kernel();
  if (use_dot && isa == Isa::kAvx512 && uk != nullptr && cpu_has_avx512_bf16()) {
    return dot_path(*uk, g, max_threads);
  }
  return fallback_path(g, isa, max_threads);
}

bool bf16_gemm(const Bf16GemmArgs& args) {
  return bf16_gemm_with(args, active_isa(), ThreadPool::shared().size(), true);
}

}  // namespace qkd
