// Int8 products for the profiler's Krylov passes (gemm_int8.h).
//
// int8_gemm in three parallel phases:
//   1. per block of 1024 rows of B: each column's max |b| and Σ b² (float64,
//      in row order, so the thresholds do not depend on the thread count),
//      then, when some column has values beyond 6 rms, Σ b² once more of the
//      values within it (the threshold's second pass, gemm_int8.h);
//   2. per block: B quantized and packed [k/4][nPad][4] (int8), each
//      column's sum per block (the u8 offset's correction), outliers listed;
//   3. per tile of 48 output rows: for each panel of 8 columns and chunk of
//      65536 reduction values, the vpdpbusd micro-kernel (a vector holds 16
//      output rows' quads, B's quad is broadcast), the correction
//      Σ (q+128)·b = Σ q·b + 128·Σ b, the column scale, then the outliers
//      in float32 and the row scale.
// The portable path runs the same phases with a scalar micro-kernel; the
// packing and quantization rules are identical on both (float32 products,
// rint with ties to even), and the TypeScript reference follows them bit for
// bit (src/tensor/reference/int8-gemm.ts).
#include "gemm_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "aligned_buffer.h"
#include "cpu.h"
#include "gemm_bf16.h"
#include "thread_pool.h"
#include "transpose_avx512.h"

#if QKD_X86
#include <immintrin.h>
#endif

namespace qkd {
namespace {

constexpr int64_t kBlock = 1024;         // rows of B per statistics / packing task (a multiple of 4)
constexpr int64_t kChunk = 65536;        // reduction values per int32 sum (a multiple of kBlock)
constexpr float kOutlierRms = 6.0f;      // |b| beyond this many column rms: multiplied in float32
constexpr int64_t kTileVectors = 3;      // 16-row vectors per tile
constexpr int64_t kTileRows = 16 * kTileVectors;
constexpr int64_t kPanel = 8;            // columns per micro-kernel call
constexpr int64_t kQuantRowQuads = 16;   // row quads per quantization task
constexpr int64_t kQuantCols = 1024;     // columns of a task's row quads quantized at a time

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int32_t quantize_one(float v, float inv) {
  const float t = v * inv;
  const float r = std::nearbyint(t);  // ties to even (default rounding mode)
  return static_cast<int32_t>(std::min(127.0f, std::max(-127.0f, r)));
}

void run(int64_t count, TaskFn fn, void* context, bool parallel) {
  if (parallel && count > 1) {
    ThreadPool::shared().run(count, fn, context);
  } else {
    for (int64_t t = 0; t < count; ++t) fn(context, t, 0);
  }
}

// ---------------------------------------------------------------------------
// int8_quantize

struct QuantizeJob {
  const Int8QuantizeArgs* g;
  const float* inv;    // per row or per column
  const float* scale;  // the same
  int64_t s_rows;      // int8_stride(cols): the by_rows layout's stride
  int64_t s_cols;      // int8_stride(rows): the by_cols layout's
  double* error;       // per task
  double* total;
  bool avx512;
};

// One row quad, scalar: the reference for the vector path.
void quantize_quad_scalar(const QuantizeJob& job, int64_t i0, double* error, double* total) {
  const Int8QuantizeArgs& g = *job.g;
  for (int64_t r = 0; r < 4; ++r) {
    const int64_t i = i0 + r;
    for (int64_t j = 0; j < g.cols; ++j) {
      const float w = bf16_bits_to_float(g.w[i * g.cols + j]);
      const int64_t s = g.per_row ? i : j;
      const int32_t v = quantize_one(w, job.inv[s]);
      const uint8_t byte = static_cast<uint8_t>(v + 128);
      g.by_rows[((i / 4) * job.s_rows + j) * 4 + (i % 4)] = byte;
      g.by_cols[((j / 4) * job.s_cols + i) * 4 + (j % 4)] = byte;
      const double d = static_cast<double>(w) - static_cast<double>(job.scale[s]) * v;
      *error += d * d;
      *total += static_cast<double>(w) * w;
    }
    for (int64_t j = g.cols; j < job.s_rows; ++j) g.by_rows[((i / 4) * job.s_rows + j) * 4 + (i % 4)] = 128;
  }
}

#if QKD_X86
// Columns [j_begin, j_end) (multiples of 16) of one row quad.
QKD_TARGET_AVX512 void quantize_quad_avx512(const QuantizeJob& job, int64_t i0, int64_t j_begin, int64_t j_end,
                                            double* error, double* total) {
  const Int8QuantizeArgs& g = *job.g;
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), offset = _mm512_set1_epi32(128);
  // d = w − s·v and the squares summed in float32 per quad (a gate's figure, not a result), then in float64.
  __m512 err = _mm512_setzero_ps(), tot = _mm512_setzero_ps();
  for (int64_t j0 = j_begin; j0 < j_end; j0 += 16) {
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(16, g.cols - j0));
    const __mmask16 m = valid >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << valid) - 1u);
    __m128i bytes[4];
#pragma GCC unroll 4
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t i = i0 + r;
      const __m256i bits = _mm256_maskz_loadu_epi16(m, g.w + i * g.cols + j0);
      const __m512 w = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
      const __m512 inv = g.per_row ? _mm512_set1_ps(job.inv[i]) : _mm512_maskz_loadu_ps(m, job.inv + j0);
      const __m512 scale = g.per_row ? _mm512_set1_ps(job.scale[i]) : _mm512_maskz_loadu_ps(m, job.scale + j0);
      const __m512i v = _mm512_max_epi32(lo, _mm512_min_epi32(hi, _mm512_cvtps_epi32(_mm512_mul_ps(w, inv))));
      bytes[r] = _mm512_cvtepi32_epi8(_mm512_add_epi32(v, offset));
      const __m512 d = _mm512_fnmadd_ps(scale, _mm512_cvtepi32_ps(v), w);
      err = _mm512_fmadd_ps(d, d, err);
      tot = _mm512_fmadd_ps(w, w, tot);
    }
    // by_rows: the 4 rows' bytes interleaved per column (64 bytes, the pad columns' bytes are 128).
    const __m128i p01l = _mm_unpacklo_epi8(bytes[0], bytes[1]), p01h = _mm_unpackhi_epi8(bytes[0], bytes[1]);
    const __m128i p23l = _mm_unpacklo_epi8(bytes[2], bytes[3]), p23h = _mm_unpackhi_epi8(bytes[2], bytes[3]);
    uint8_t* dst = g.by_rows + ((i0 / 4) * job.s_rows + j0) * 4;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi16(p01l, p23l));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_unpackhi_epi16(p01l, p23l));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm_unpacklo_epi16(p01h, p23h));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm_unpackhi_epi16(p01h, p23h));
    // by_cols: each column quad's 4 bytes of the 4 rows side by side (a 4×4 transpose of dwords).
    __m128 r0 = _mm_castsi128_ps(bytes[0]), r1 = _mm_castsi128_ps(bytes[1]);
    __m128 r2 = _mm_castsi128_ps(bytes[2]), r3 = _mm_castsi128_ps(bytes[3]);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    const __m128 quads[4] = {r0, r1, r2, r3};
    for (int64_t q = 0; q < valid / 4; ++q) {
      _mm_storeu_ps(reinterpret_cast<float*>(g.by_cols + ((j0 / 4 + q) * job.s_cols + i0) * 4), quads[q]);
    }
  }
  *error += _mm512_reduce_add_ps(err);
  *total += _mm512_reduce_add_ps(tot);
}
#endif

struct TopJob {
  const Int8QuantizeArgs* g;
  int16_t* top;  // per row, or per task × column
  int64_t tasks;
};

void top_task(void* context, int64_t task, int /*worker*/) {
  const TopJob& job = *static_cast<const TopJob*>(context);
  const Int8QuantizeArgs& g = *job.g;
  const int64_t i0 = task * g.rows / job.tasks, i1 = (task + 1) * g.rows / job.tasks;
  int16_t* cols = job.top + task * g.cols;
  for (int64_t i = i0; i < i1; ++i) {
    const int16_t* row = reinterpret_cast<const int16_t*>(g.w + i * g.cols);
    if (g.per_row) {
      int16_t m = 0;
      for (int64_t j = 0; j < g.cols; ++j) m = std::max<int16_t>(m, static_cast<int16_t>(row[j] & 0x7fff));
      job.top[i] = m;
    } else {
      for (int64_t j = 0; j < g.cols; ++j) cols[j] = std::max<int16_t>(cols[j], static_cast<int16_t>(row[j] & 0x7fff));
    }
  }
}

void quantize_task(void* context, int64_t task, int /*worker*/) {
  QuantizeJob& job = *static_cast<QuantizeJob*>(context);
  const int64_t quads = job.g->rows / 4;
  const int64_t q0 = task * kQuantRowQuads, q1 = std::min(quads, q0 + kQuantRowQuads);
  double error = 0, total = 0;
#if QKD_X86
  if (job.avx512) {
    // Up to kQuantCols columns of every row quad of the task at a time (8192 × 2048, measured: blocks
    // of 64 columns 6.9–7.3 ms, 256: 5.5–6.0, 1024 or whole rows: 3.5–4.1).
    for (int64_t j0 = 0; j0 < job.s_rows; j0 += kQuantCols) {
      for (int64_t q = q0; q < q1; ++q) quantize_quad_avx512(job, q * 4, j0, std::min(job.s_rows, j0 + kQuantCols), &error, &total);
    }
    job.error[task] = error;
    job.total[task] = total;
    return;
  }
#endif
  for (int64_t q = q0; q < q1; ++q) quantize_quad_scalar(job, q * 4, &error, &total);
  job.error[task] = error;
  job.total[task] = total;
}

// ---------------------------------------------------------------------------
// int8_gemm

struct Outlier {
  int64_t t;
  int64_t c;
  float value;
};

struct GemmJob {
  const Int8GemmArgs* g;
  int64_t n_pad;    // columns of packed B (a multiple of kPanel)
  int64_t blocks;   // ceil(k / kBlock)
  float* block_max;    // [blocks][n]
  double* block_ss;    // [blocks][n]
  int32_t* block_sum;  // [blocks][n_pad]: Σ of the packed values
  float* threshold;    // [n_pad]
  const float* trim;   // the statistics' second pass: Σ b² only of |b| ≤ trim (else nullptr)
  float* inv;          // [n_pad]
  float* scale;        // [n_pad]
  int8_t* bp;          // [k/4][n_pad][4]
  int32_t* chunk_sum;  // [chunks][n_pad]
  std::vector<Outlier>* block_outliers;  // [blocks]
  const Outlier* outliers;
  int64_t outlier_count;
  bool vnni;
  bool avx512;
  std::atomic<bool> not_finite{false};
  std::atomic<bool> failed{false};
};

float folded(const Int8GemmArgs& g, int64_t t, int64_t c) {
  const float v = g.b[t * g.ldb + c];
  return g.fold != nullptr ? v * g.fold[t] : v;
}

#if QKD_X86
// stats_task's rows t0..t1 on AVX-512, 64 columns at a time (the same float32 products and per-column
// float64 sums in row order as the scalar loop). Returns false when a value is not finite.
// With `trim` (the first pass's thresholds) only Σ b² of the values within them is taken.
QKD_TARGET_AVX512 bool stats_avx512(const Int8GemmArgs& g, int64_t t0, int64_t t1, float* mx, double* ss,
                                    const float* trim) {
  const __m512 inf = _mm512_set1_ps(INFINITY);
  __mmask16 bad = 0;
  for (int64_t c0 = 0; c0 < g.n; c0 += 64) {
    __m512 m[4];
    __m512d s[8];
    __mmask16 lanes[4];
    __m512 limit[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const int64_t left = g.n - c0 - 16 * v;
      lanes[v] = left >= 16 ? static_cast<__mmask16>(0xffff) : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u);
      limit[v] = trim != nullptr ? _mm512_maskz_loadu_ps(lanes[v], trim + c0 + 16 * v) : inf;
      m[v] = _mm512_setzero_ps();
      s[2 * v] = _mm512_setzero_pd();
      s[2 * v + 1] = _mm512_setzero_pd();
    }
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = g.b + t * g.ldb + c0;
      const __m512 f = _mm512_set1_ps(g.fold != nullptr ? g.fold[t] : 1.0f);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        __m512 x = _mm512_maskz_loadu_ps(lanes[v], row + 16 * v);
        if (g.fold != nullptr) x = _mm512_mul_ps(x, f);
        const __m512 ax = _mm512_abs_ps(x);
        bad |= _mm512_cmp_ps_mask(ax, inf, _CMP_NLT_UQ);
        m[v] = _mm512_max_ps(m[v], ax);
        if (trim != nullptr) x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(ax, limit[v], _CMP_LE_OQ), x);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1));
        s[2 * v] = _mm512_fmadd_pd(lo, lo, s[2 * v]);
        s[2 * v + 1] = _mm512_fmadd_pd(hi, hi, s[2 * v + 1]);
      }
    }
    alignas(64) float mbuf[64];
    alignas(64) double sbuf[64];
    for (int v = 0; v < 4; ++v) {
      _mm512_store_ps(mbuf + 16 * v, m[v]);
      _mm512_store_pd(sbuf + 16 * v, s[2 * v]);
      _mm512_store_pd(sbuf + 16 * v + 8, s[2 * v + 1]);
    }
    for (int64_t c = c0; c < std::min(g.n, c0 + 64); ++c) {
      if (trim == nullptr) mx[c] = mbuf[c - c0];
      ss[c] = sbuf[c - c0];
    }
  }
  return bad == 0;
}

// pack_task's rows t0..t1 (a multiple of 4 apart) on AVX-512: 4 rows × 16 columns per step, their
// int8 values joined into the 16 dwords of one quad; the outliers (rare) are listed by a scalar pass.
QKD_TARGET_AVX512 void pack_avx512(const GemmJob& job, int64_t t0, int64_t t1, int32_t* sum, std::vector<Outlier>& out) {
  const Int8GemmArgs& g = *job.g;
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), byte = _mm512_set1_epi32(0xff);
  for (int64_t c0 = 0; c0 < job.n_pad; c0 += 16) {
    const int64_t left = g.n - c0;
    const __mmask16 lanes = left >= 16 ? static_cast<__mmask16>(0xffff) : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u);
    const __m512 limit = _mm512_maskz_loadu_ps(lanes, job.threshold + c0);
    const __m512 inv = _mm512_maskz_loadu_ps(lanes, job.inv + c0);
    // n_pad is a multiple of 8: the last group may hold 8 columns of packed B, not 16.
    const __mmask16 store = job.n_pad - c0 >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>(0xff);
    __m512i total = _mm512_setzero_si512();
    for (int64_t t = t0; t < t1; t += 4) {
      __m512i word = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        __m512 x = _mm512_maskz_loadu_ps(lanes, g.b + (t + r) * g.ldb + c0);
        if (g.fold != nullptr) x = _mm512_mul_ps(x, _mm512_set1_ps(g.fold[t + r]));
        const __mmask16 outlier = _mm512_cmp_ps_mask(_mm512_abs_ps(x), limit, _CMP_GT_OQ);
        const __m512i q = _mm512_maskz_max_epi32(static_cast<__mmask16>(~outlier), lo,
                                                 _mm512_min_epi32(hi, _mm512_cvtps_epi32(_mm512_mul_ps(x, inv))));
        total = _mm512_add_epi32(total, q);
        word = _mm512_or_si512(word, _mm512_slli_epi32(_mm512_and_si512(q, byte), 8 * r));
        if (outlier != 0) {
          alignas(64) float values[16];
          _mm512_store_ps(values, x);
          for (int j = 0; j < 16; ++j) {
            if (outlier & (1u << j)) out.push_back({t + r, c0 + j, values[j]});
          }
        }
      }
      _mm512_mask_storeu_epi32(job.bp + ((t / 4) * job.n_pad + c0) * 4, store, word);
    }
    _mm512_mask_storeu_epi32(sum + c0, store, _mm512_add_epi32(_mm512_maskz_loadu_epi32(store, sum + c0), total));
  }
}
#endif

void stats_task(void* context, int64_t block, int /*worker*/) {
  GemmJob& job = *static_cast<GemmJob*>(context);
  const Int8GemmArgs& g = *job.g;
  float* mx = job.block_max + block * g.n;
  double* ss = job.block_ss + block * g.n;
  const float* trim = job.trim;
  if (trim == nullptr) std::fill(mx, mx + g.n, 0.0f);
  std::fill(ss, ss + g.n, 0.0);
  const int64_t t0 = block * kBlock, t1 = std::min(g.k, t0 + kBlock);
#if QKD_X86
  if (job.avx512) {
    if (!stats_avx512(g, t0, t1, mx, ss, trim)) job.not_finite.store(true, std::memory_order_relaxed);
    return;
  }
#endif
  bool finite = true;
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t c = 0; c < g.n; ++c) {
      const float v = folded(g, t, c);
      finite = finite && std::isfinite(v);
      if (trim == nullptr) mx[c] = std::max(mx[c], std::fabs(v));
      if (trim == nullptr || std::fabs(v) <= trim[c]) ss[c] += static_cast<double>(v) * v;
    }
  }
  if (!finite) job.not_finite.store(true, std::memory_order_relaxed);
}

void pack_task(void* context, int64_t block, int /*worker*/) {
  GemmJob& job = *static_cast<GemmJob*>(context);
  const Int8GemmArgs& g = *job.g;
  int32_t* sum = job.block_sum + block * job.n_pad;
  std::fill(sum, sum + job.n_pad, 0);
  std::vector<Outlier>& out = job.block_outliers[block];
  out.clear();
  const int64_t t0 = block * kBlock, t1 = std::min(g.k, t0 + kBlock);
#if QKD_X86
  if (job.avx512) {
    pack_avx512(job, t0, t1, sum, out);
    return;
  }
#endif
  for (int64_t t = t0; t < t1; ++t) {
    int8_t* row = job.bp + (t / 4) * job.n_pad * 4 + (t % 4);
    for (int64_t c = 0; c < job.n_pad; ++c) {
      int32_t v = 0;
      if (c < g.n) {
        const float b = folded(g, t, c);
        if (std::fabs(b) > job.threshold[c]) {
          out.push_back({t, c, b});
        } else {
          v = quantize_one(b, job.inv[c]);
        }
      }
      row[c * 4] = static_cast<int8_t>(v);
      sum[c] += v;
    }
  }
}

// acc[c * 16·vectors + lane] += the int32 sums of a tile's rows for its 8 columns over `quads` quads.
void kernel_portable(const uint8_t* a, int64_t a_step, const int8_t* b, int64_t b_step, int64_t quads, int64_t vectors,
                     int32_t* acc) {
  const int64_t rows = 16 * vectors;
  for (int64_t q = 0; q < quads; ++q) {
    for (int64_t c = 0; c < kPanel; ++c) {
      const int8_t* bq = b + c * 4;
      for (int64_t i = 0; i < rows; ++i) {
        const uint8_t* aq = a + i * 4;
        acc[c * rows + i] += aq[0] * bq[0] + aq[1] * bq[1] + aq[2] * bq[2] + aq[3] * bq[3];
      }
    }
    a += a_step;
    b += b_step;
  }
}

#if QKD_X86
template <int V>
QKD_TARGET_AVX512_VNNI void kernel_vnni(const uint8_t* a, int64_t a_step, const int8_t* b, int64_t b_step, int64_t quads,
                                        int32_t* acc) {
  __m512i sum[V][kPanel];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
#pragma GCC unroll 8
    for (int c = 0; c < kPanel; ++c) sum[v][c] = _mm512_load_si512(acc + c * 16 * V + v * 16);
  }
  for (int64_t q = 0; q < quads; ++q) {
    __m512i av[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) av[v] = _mm512_loadu_si512(a + v * 64);
    _mm_prefetch(reinterpret_cast<const char*>(a + 8 * a_step), _MM_HINT_T0);
    if (V > 1) _mm_prefetch(reinterpret_cast<const char*>(a + 8 * a_step + 64), _MM_HINT_T0);
    if (V > 2) _mm_prefetch(reinterpret_cast<const char*>(a + 8 * a_step + 128), _MM_HINT_T0);
    const int32_t* words = reinterpret_cast<const int32_t*>(b);
#pragma GCC unroll 8
    for (int c = 0; c < kPanel; ++c) {
      const __m512i bc = _mm512_set1_epi32(words[c]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) sum[v][c] = _mm512_dpbusd_epi32(sum[v][c], av[v], bc);
    }
    a += a_step;
    b += b_step;
  }
#pragma GCC unroll 8
  for (int c = 0; c < kPanel; ++c) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_store_si512(acc + c * 16 * V + v * 16, sum[v][c]);
  }
}
#endif

#if QKD_X86
// tile_task's conversion of one column's int32 sums (16·vectors rows) on AVX-512: the same float32
// operations as the scalar loop, so the same bits.
QKD_TARGET_AVX512 void convert_avx512(const int32_t* from, float* to, int32_t correction, float s, int64_t vectors,
                                      bool first) {
  const __m512i corr = _mm512_set1_epi32(correction);
  const __m512 scale = _mm512_set1_ps(s);
  for (int64_t v = 0; v < vectors; ++v) {
    __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(from + 16 * v), corr)), scale);
    if (!first) x = _mm512_add_ps(_mm512_load_ps(to + 16 * v), x);
    _mm512_store_ps(to + 16 * v, x);
  }
}

// tile_task's store: out holds the tile column by column (panel, column in panel, row); C wants rows.
// 16 × 16 blocks go through a register transpose, each row times its scale.
QKD_TARGET_AVX512 void store_avx512(const float* out, int64_t panel_size, int64_t rows, int64_t n,
                                    const float* row_scale, float* c, int64_t ldc) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
      __m512 t[16];
      for (int64_t j = 0; j < 16; ++j) {
        const int64_t col = c0 + j;
        t[j] = col < n ? _mm512_load_ps(out + (col / kPanel) * panel_size + (col % kPanel) * kTileRows + r0)
                       : _mm512_setzero_ps();
      }
      transpose16x16(t);
      const int64_t left = n - c0;
      const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
      for (int64_t r = 0; r < std::min<int64_t>(16, rows - r0); ++r) {
        const float rs = row_scale != nullptr ? row_scale[r0 + r] : 1.0f;
        _mm512_mask_storeu_ps(c + (r0 + r) * ldc + c0, mask, _mm512_mul_ps(t[r], _mm512_set1_ps(rs)));
      }
    }
  }
}
#endif

// A tile's quads are taken this many at a time through every column panel, so the tile's slice of A
// (kSubQuads · 64 · vectors bytes, rows of A a whole stride apart) is read from memory once and then
// from L1, instead of once per panel.
constexpr int64_t kSubQuads = 128;

void tile_task(void* context, int64_t tile, int /*worker*/) {
  thread_local AlignedBuffer acc_buffer, out_buffer;
  GemmJob& job = *static_cast<GemmJob*>(context);
  const Int8GemmArgs& g = *job.g;
  const int64_t i0 = tile * kTileRows;
  const int64_t rows = std::min(kTileRows, g.m - i0);
  const int64_t vectors = ceil_div(rows, 16);
  const int64_t lanes = 16 * vectors;
  const int64_t quads = g.k / 4;
  const int64_t panels = job.n_pad / kPanel;
  const int64_t panel_size = kPanel * kTileRows;  // int32 / float slots per panel
  int32_t* acc = reinterpret_cast<int32_t*>(acc_buffer.reserve(static_cast<size_t>(panels * panel_size)));
  float* out = out_buffer.reserve(static_cast<size_t>(panels * panel_size));
  if (acc == nullptr || out == nullptr) {
    job.failed.store(true, std::memory_order_relaxed);
    return;
  }
  const int64_t a_step = g.stride * 4, b_step = job.n_pad * 4;
  for (int64_t q0 = 0, chunk = 0; q0 < quads; q0 += kChunk / 4, ++chunk) {
    const int64_t q_end = std::min(quads, q0 + kChunk / 4);
    std::fill(acc, acc + panels * panel_size, 0);
    for (int64_t s0 = q0; s0 < q_end; s0 += kSubQuads) {
      const int64_t count = std::min(kSubQuads, q_end - s0);
      const uint8_t* a = g.a + (s0 * g.stride + i0) * 4;
      for (int64_t p = 0; p < panels; ++p) {
        const int8_t* b = job.bp + (s0 * job.n_pad + p * kPanel) * 4;
        int32_t* pa = acc + p * panel_size;
#if QKD_X86
        if (job.vnni) {
          if (vectors == 3) kernel_vnni<3>(a, a_step, b, b_step, count, pa);
          else if (vectors == 2) kernel_vnni<2>(a, a_step, b, b_step, count, pa);
          else kernel_vnni<1>(a, a_step, b, b_step, count, pa);
          continue;
        }
#endif
        kernel_portable(a, a_step, b, b_step, count, vectors, pa);
      }
    }
    // This chunk's sums, corrected for the u8 offset and scaled per column, into out.
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t col0 = p * kPanel;
      const int64_t valid_cols = std::min(kPanel, g.n - col0);
      const int32_t* sums = job.chunk_sum + chunk * job.n_pad + col0;
      for (int64_t c = 0; c < valid_cols; ++c) {
        const int32_t correction = 128 * sums[c];
        const float s = job.scale[col0 + c];
        const int32_t* from = acc + p * panel_size + c * lanes;
        float* to = out + p * panel_size + c * kTileRows;
#if QKD_X86
        if (job.avx512) {
          convert_avx512(from, to, correction, s, vectors, chunk == 0);
          continue;
        }
#endif
        for (int64_t i = 0; i < rows; ++i) {
          const float v = static_cast<float>(from[i] - correction) * s;
          to[i] = chunk == 0 ? v : to[i] + v;
        }
      }
    }
  }
  // The outliers, in float32.
  for (int64_t o = 0; o < job.outlier_count; ++o) {
    const Outlier& x = job.outliers[o];
    const uint8_t* a = g.a + ((x.t / 4) * g.stride + i0) * 4 + (x.t % 4);
    float* column = out + (x.c / kPanel) * panel_size + (x.c % kPanel) * kTileRows;
    for (int64_t i = 0; i < rows; ++i) column[i] += static_cast<float>(static_cast<int32_t>(a[i * 4]) - 128) * x.value;
  }
#if QKD_X86
  if (job.avx512) {
    store_avx512(out, panel_size, rows, g.n, g.row_scale != nullptr ? g.row_scale + i0 : nullptr, g.c + i0 * g.ldc, g.ldc);
    return;
  }
#endif
  for (int64_t i = 0; i < rows; ++i) {
    const float rs = g.row_scale != nullptr ? g.row_scale[i0 + i] : 1.0f;
    float* dst = g.c + (i0 + i) * g.ldc;
    for (int64_t c = 0; c < g.n; ++c) dst[c] = out[(c / kPanel) * panel_size + (c % kPanel) * kTileRows + i] * rs;
  }
}

}  // namespace

bool int8_gemm_fast() { return active_isa() == Isa::kAvx512 && cpu_has_avx512_vnni(); }

double int8_quantize(const Int8QuantizeArgs& g) {
  const int64_t count = g.per_row ? g.rows : g.cols;
  std::vector<float> inv(static_cast<size_t>(count));
  // The largest |w| per row or column, from the bits (|w| orders like its bits without the sign; as
  // int16 they are non-negative, so a signed max vectorizes on any x86-64).
  const int64_t top_tasks = std::max<int64_t>(1, std::min<int64_t>(ceil_div(g.rows, 64), 64));
  std::vector<int16_t> top(static_cast<size_t>(g.per_row ? g.rows : top_tasks * g.cols), 0);
  TopJob top_job{&g, top.data(), top_tasks};
  run(top_tasks, top_task, &top_job, g.rows * g.cols >= (1 << 18));
  if (!g.per_row) {
    for (int64_t t = 1; t < top_tasks; ++t)
      for (int64_t j = 0; j < g.cols; ++j) top[j] = std::max(top[j], top[t * g.cols + j]);
  }
  for (int64_t s = 0; s < count; ++s) {
    if (top[s] >= 0x7f80) return -1.0;  // Inf or NaN
    const float m = bf16_bits_to_float(static_cast<uint16_t>(top[s]));
    g.scales[s] = m / 127.0f;
    inv[s] = m > 0 ? 127.0f / m : 0.0f;
  }
  QuantizeJob job;
  job.g = &g;
  job.inv = inv.data();
  job.scale = g.scales;
  job.s_rows = int8_stride(g.cols);
  job.s_cols = int8_stride(g.rows);
  // The by_cols layout's pad rows hold the value 0.
  for (int64_t q = 0; q < g.cols / 4; ++q) {
    std::memset(g.by_cols + (q * job.s_cols + g.rows) * 4, 128, static_cast<size_t>((job.s_cols - g.rows) * 4));
  }
#if QKD_X86
  job.avx512 = active_isa() == Isa::kAvx512;
#else
  job.avx512 = false;
#endif
  const int64_t tasks = ceil_div(g.rows / 4, kQuantRowQuads);
  std::vector<double> error(static_cast<size_t>(tasks)), total(static_cast<size_t>(tasks));
  job.error = error.data();
  job.total = total.data();
  run(tasks, quantize_task, &job, g.rows * g.cols >= (1 << 18));
  double e = 0, t = 0;
  for (int64_t i = 0; i < tasks; ++i) {
    e += error[i];
    t += total[i];
  }
  return t > 0 ? e / t : 0.0;
}

int64_t int8_gemm(const Int8GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return 0;
  thread_local AlignedBuffer packed, sums, stats;
  thread_local std::vector<std::vector<Outlier>> lists;
  thread_local std::vector<Outlier> merged;
  GemmJob job;
  job.g = &g;
  job.n_pad = ceil_div(g.n, kPanel) * kPanel;
  job.blocks = ceil_div(g.k, kBlock);
  job.vnni = int8_gemm_fast();
#if QKD_X86
  job.avx512 = active_isa() == Isa::kAvx512;
#else
  job.avx512 = false;
#endif
  const int64_t chunks = std::max<int64_t>(1, ceil_div(g.k, kChunk));
  // Packed B (int8) and the per-block and per-column arrays, in float-sized slots.
  job.bp = reinterpret_cast<int8_t*>(packed.reserve(static_cast<size_t>(std::max<int64_t>(1, g.k * job.n_pad / 4))));
  const int64_t per_block = 2 * g.n + job.n_pad;  // max (float) + sum (int32) + ss (double: 2 slots each)
  float* base = stats.reserve(static_cast<size_t>(job.blocks * (per_block + 2 * g.n) + 3 * job.n_pad + chunks * job.n_pad + 16));
  if (job.bp == nullptr || base == nullptr) return -2;
  job.block_ss = reinterpret_cast<double*>(base);  // 8-byte aligned (64-byte buffer)
  job.block_max = base + 2 * job.blocks * g.n;
  job.block_sum = reinterpret_cast<int32_t*>(job.block_max + job.blocks * g.n);
  job.threshold = reinterpret_cast<float*>(job.block_sum + job.blocks * job.n_pad);
  job.inv = job.threshold + job.n_pad;
  job.scale = job.inv + job.n_pad;
  job.chunk_sum = reinterpret_cast<int32_t*>(job.scale + job.n_pad);
  if (static_cast<int64_t>(lists.size()) < job.blocks) lists.resize(static_cast<size_t>(job.blocks));
  job.block_outliers = lists.data();
  const bool parallel = static_cast<double>(g.m) * g.n * g.k >= (1 << 20);

  // Thresholds in two passes: 6 rms of the column, then 6 rms of its values within that (a few rows
  // 100× the rest would otherwise lift the rms, and the scale, far above the bulk of the column).
  job.trim = nullptr;
  run(job.blocks, stats_task, &job, parallel);
  if (job.not_finite.load()) return -1;
  // The second pass changes nothing where the first bound is the column's max (every value is within
  // it, so the trimmed rms is the rms): it runs only when some column has values beyond 6 rms.
  bool clipped = false;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      if (!clipped) break;
      job.trim = job.threshold;
      run(job.blocks, stats_task, &job, parallel);
    }
    for (int64_t c = 0; c < job.n_pad; ++c) {
      float mx = 0;
      double ss = 0;
      if (c < g.n) {
        for (int64_t b = 0; b < job.blocks; ++b) {
          mx = std::max(mx, job.block_max[b * g.n + c]);
          ss += job.block_ss[b * g.n + c];
        }
      }
      const float limit = static_cast<float>(kOutlierRms * std::sqrt(ss / static_cast<double>(g.k)));
      job.threshold[c] = std::min(pass == 0 ? mx : job.threshold[c], limit);
      if (pass == 0 && limit < mx) clipped = true;
    }
  }
  for (int64_t c = 0; c < job.n_pad; ++c) {
    const float t = job.threshold[c];
    job.scale[c] = t / 127.0f;
    job.inv[c] = t > 0 ? 127.0f / t : 0.0f;
  }
  run(job.blocks, pack_task, &job, parallel);
  std::fill(job.chunk_sum, job.chunk_sum + chunks * job.n_pad, 0);
  merged.clear();
  for (int64_t b = 0; b < job.blocks; ++b) {
    int32_t* chunk = job.chunk_sum + (b * kBlock / kChunk) * job.n_pad;
    for (int64_t c = 0; c < job.n_pad; ++c) chunk[c] += job.block_sum[b * job.n_pad + c];
    merged.insert(merged.end(), lists[b].begin(), lists[b].end());
  }
  job.outliers = merged.data();
  job.outlier_count = static_cast<int64_t>(merged.size());
  run(ceil_div(g.m, kTileRows), tile_task, &job, parallel);
  if (job.failed.load()) return -2;
  return job.outlier_count;
}

}  // namespace qkd
