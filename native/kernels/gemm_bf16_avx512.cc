// The AVX-512 BF16 micro-kernel of the bf16 GEMM (gemm_bf16.h): a 14×32
// tile of C in 28 zmm accumulators, fed by vdpbf16ps.
//
// vdpbf16ps adds a[2i]·b[2i] + a[2i+1]·b[2i+1] into float lane i, so both
// operands are packed in k-pairs: one dword holds the bf16 values at k and
// k+1 (low half k). Per pair step: two 32-bf16 loads of B (32 columns) and,
// for each of the 14 rows, one dword broadcast of A and two dot products:
// 28 independent chains, twice the multiply-adds of the float32 kernel's
// 28 FMAs per step.
//
// Packing (per 14-row micro-panel, used at once, so it stays in L1):
//   A not transposed (rows of A are contiguous along k): 16×16 dword
//     transposes, a dword being a k-pair of one row;
//   A transposed (op(A) row m is column m of A): the two source rows k, k+1
//     are interleaved word by word (vpermw);
//   B: two float32 rows k, k+1 are rounded to bf16 (vcvtne2ps2bf16, nearest
//     even) and interleaved the same way; B transposed (op(B) column j is
//     row j of B, contiguous along k): 32 floats of a row rounded into 16
//     k-pairs, 16 rows at a time, then a 16×16 dword transpose.
// A transposed C (trans_c) gets each tile through two 16×16 register
// transposes: the accumulators of one column half become 16 columns of 14
// rows, stored as 14-float runs.
#include "cpu.h"
#include "gemm_bf16.h"

#if QKD_X86
#include <immintrin.h>

#include "transpose_avx512.h"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qkd {
namespace {

constexpr int kRows = 14;   // MR
constexpr int kCols = 32;   // NR: two zmm of 16 float lanes
constexpr int kAhead = 16;  // rows of A the transposed packer prefetches ahead

QKD_TARGET_AVX512_BF16 inline __mmask16 lanes16(int64_t count) {
  if (count >= 16) return static_cast<__mmask16>(0xffff);
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1u);
}

QKD_TARGET_AVX512_BF16 inline __mmask32 lanes32(int64_t count) {
  if (count >= 32) return ~static_cast<__mmask32>(0);
  if (count <= 0) return 0;
  return static_cast<__mmask32>((1u << count) - 1u);
}

// Word indices that interleave the low and high 16 words of a zmm:
// result dword j = (word j, word 16 + j).
QKD_TARGET_AVX512_BF16 inline __m512i interleave_index() {
  return _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                          5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
}

QKD_TARGET_AVX512_BF16 void compute_tile(int64_t pairs, const uint32_t* __restrict ap,
                                         const uint32_t* __restrict bp, float* __restrict c, int64_t ldc,
                                         bool accumulate, int m_valid, int n_valid, bool transposed) {
  __m512 acc[kRows][2];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    acc[r][0] = _mm512_setzero_ps();
    acc[r][1] = _mm512_setzero_ps();
  }
  if (n_valid <= 16) {
    // At most 16 columns (the profiler's thin Krylov blocks): the second half of the tile is
    // padding, so only the first accumulators run, half the dot products per step.
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_load_si512(bp));
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) {
        const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(ap[r])));
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      }
      ap += kRows;
      bp += kCols;
    }
  } else {
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_load_si512(bp));
      const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_load_si512(bp + 16));
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) {
        const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(ap[r])));
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
      }
      ap += kRows;
      bp += kCols;
    }
  }
  if (transposed) {
    // Column j of the tile (14 rows) goes to c + j·ldc.
    const __mmask16 rows = lanes16(m_valid);
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const int cols = n_valid - 16 * half;
      if (cols <= 0) break;
      __m512 t[16];
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) t[r] = acc[r][half];
      for (int r = kRows; r < 16; ++r) t[r] = _mm512_setzero_ps();
      transpose16x16(t);
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        if (j >= cols) break;
        float* column = c + (16 * half + j) * ldc;
        __m512 v = t[j];
        if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(rows, column));
        _mm512_mask_storeu_ps(column, rows, v);
      }
    }
    return;
  }
  const __mmask16 mask0 = lanes16(n_valid), mask1 = lanes16(n_valid - 16);
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    if (r >= m_valid) break;
    float* row = c + r * ldc;
    __m512 v0 = acc[r][0], v1 = acc[r][1];
    if (accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(mask0, row));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(mask1, row + 16));
    }
    _mm512_mask_storeu_ps(row, mask0, v0);
    _mm512_mask_storeu_ps(row + 16, mask1, v1);
  }
}

// Rows [row, row+rows) of a row-major A, k in [k0, k0 + 2·pairs): each row
// is a run of dwords (k-pairs), transposed 16×16 at a time.
QKD_TARGET_AVX512_BF16 void pack_a_rows(const uint16_t* a, int64_t lda, int64_t k_total, int64_t row,
                                        int64_t rows, int64_t k0, int64_t pairs, uint32_t* ap) {
  for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
    const int64_t k = k0 + 2 * p0;
    const __mmask32 mask = lanes32(k_total - k);
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i < rows && mask != 0) {
        const uint16_t* src = a + (row + i) * lda + k;
        _mm_prefetch(reinterpret_cast<const char*>(src + 64), _MM_HINT_T0);
        r[i] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mask, src));
      } else {
        r[i] = _mm512_setzero_ps();
      }
    }
    transpose16x16(r);
    const int64_t steps = pairs - p0 < 16 ? pairs - p0 : 16;
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      if (j < steps) _mm512_mask_storeu_ps(ap + (p0 + j) * kRows, lanes16(kRows), r[j]);
    }
  }
}

// Columns [row, row+rows) of a row-major A (op(A) = Aᵀ), k in [k0, k0 + 2·pairs),
// as ceil(rows/14) micro-panels of `pairs` k-pairs (panel t at ap + t·14·pairs):
// the two source rows k and k+1 interleaved word by word. The pair loop is
// outermost so the two rows stay in L1 while every panel takes its part
// (walking panel by panel instead would reload each row from L2 per panel:
// rows lda apart share few L1 sets).
QKD_TARGET_AVX512_BF16 void pack_a_columns(const uint16_t* a, int64_t lda, int64_t k_total, int64_t row,
                                           int64_t rows, int64_t k0, int64_t pairs, uint32_t* ap) {
  const __m512i index = interleave_index();
  const int64_t panels = (rows + kRows - 1) / kRows;
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t k = k0 + 2 * p;
    const bool has_lo = k < k_total, has_hi = k + 1 < k_total;
    const uint16_t* src = a + k * lda + row;
    if (k + kAhead < k_total) {
      for (int64_t c = 0; c < rows; c += 32) {
        _mm_prefetch(reinterpret_cast<const char*>(src + kAhead * lda + c), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(src + (kAhead + 1) * lda + c), _MM_HINT_T0);
      }
    }
    for (int64_t t = 0; t < panels; ++t) {
      const __mmask16 mask = lanes16(rows - t * kRows);
      __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
      if (has_lo) lo = _mm256_maskz_loadu_epi16(mask, src + t * kRows);
      if (has_hi) hi = _mm256_maskz_loadu_epi16(mask, src + lda + t * kRows);
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      _mm512_mask_storeu_epi32(ap + (t * pairs + p) * kRows, lanes16(kRows), _mm512_permutexvar_epi16(index, both));
    }
  }
}

// ceil(rows/14) micro-panels of op(A) rows [row, row+rows), panel t at ap + t·14·pairs.
QKD_TARGET_AVX512_BF16 void pack_a(const uint16_t* a, int64_t lda, bool trans, int64_t k_total, int64_t row,
                                   int64_t rows, int64_t k0, int64_t pairs, uint32_t* ap) {
  if (trans) {
    pack_a_columns(a, lda, k_total, row, rows, k0, pairs, ap);
    return;
  }
  for (int64_t t = 0; t * kRows < rows; ++t) {
    const int64_t first = t * kRows;
    pack_a_rows(a, lda, k_total, row + first, rows - first < kRows ? rows - first : kRows, k0, pairs,
                ap + t * kRows * pairs);
  }
}

// Columns [col, col+cols) of op(B) = Bᵀ (rows of B, contiguous along k):
// 16 rows × 32 floats are rounded into 16 rows × 16 k-pairs, transposed so
// that each vector holds one k-pair of 16 columns. The rounding instruction
// is the one of the untransposed packer, so the packed bits are the same.
QKD_TARGET_AVX512_BF16 void pack_b_rows(const float* b, int64_t ldb, int64_t k_total, int64_t k0, int64_t pairs,
                                        int64_t col, int64_t cols, uint32_t* bp) {
  for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
    const int64_t k = k0 + 2 * p0;
    const __mmask16 lo_mask = lanes16(k_total - k), hi_mask = lanes16(k_total - k - 16);
    const int64_t steps = pairs - p0 < 16 ? pairs - p0 : 16;
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        const int64_t j = 16 * half + i;
        if (j < cols && k < k_total) {
          const float* src = b + (col + j) * ldb + k;
          const __m512 lo = _mm512_maskz_loadu_ps(lo_mask, src);
          const __m512 hi = _mm512_maskz_loadu_ps(hi_mask, src + 16);
          // cvtne2ps(x, y): words 0..15 = bf16(y), 16..31 = bf16(x): the 32 values in order, dword i the pair 2i, 2i+1.
          r[i] = _mm512_castsi512_ps(reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
        } else {
          r[i] = _mm512_setzero_ps();
        }
      }
      transpose16x16(r);
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) {
        if (p < steps) _mm512_store_si512(bp + (p0 + p) * kCols + 16 * half, _mm512_castps_si512(r[p]));
      }
    }
  }
}

QKD_TARGET_AVX512_BF16 void pack_b(const float* b, int64_t ldb, bool trans, int64_t k_total, int64_t k0, int64_t pairs,
                                   int64_t col, int64_t cols, uint32_t* bp) {
  if (trans) {
    pack_b_rows(b, ldb, k_total, k0, pairs, col, cols, bp);
    return;
  }
  const __m512i index = interleave_index();
  const __mmask16 mask0 = lanes16(cols), mask1 = lanes16(cols - 16);
  for (int64_t p = 0; p < pairs; ++p, bp += kCols) {
    const int64_t k = k0 + 2 * p;
    __m512 lo0 = _mm512_setzero_ps(), lo1 = lo0, hi0 = lo0, hi1 = lo0;
    if (k < k_total) {
      const float* src = b + k * ldb + col;
      lo0 = _mm512_maskz_loadu_ps(mask0, src);
      lo1 = _mm512_maskz_loadu_ps(mask1, src + 16);
      if (k + 1 < k_total) {
        hi0 = _mm512_maskz_loadu_ps(mask0, src + ldb);
        hi1 = _mm512_maskz_loadu_ps(mask1, src + ldb + 16);
      }
    }
    // cvtne2ps(x, y): words 0..15 = bf16(y), 16..31 = bf16(x).
    const __m512i w0 = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi0, lo0));
    const __m512i w1 = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi1, lo1));
    _mm512_store_si512(bp, _mm512_permutexvar_epi16(index, w0));
    _mm512_store_si512(bp + 16, _mm512_permutexvar_epi16(index, w1));
  }
}

// thin_columns over k-pairs [p0, p1) into acc (16 vectors: acc[j] lane i = the sum for C[i, j]), which the
// caller keeps between k-blocks, so that a block of A's rows is walked once for all of a task's strips
// (a strip alone reads 32 bytes of each row, a new page every row or two: the lines of its neighbours
// then come from L1/L2 instead of L3).
// acc[j] += A's two rows (lo: k = 2p, hi: 2p + 1, 16 columns each) times B's pair for column j (bp[j]).
__attribute__((always_inline)) QKD_TARGET_AVX512_BF16 inline void thin_columns_step(__m512 (&acc)[16], __m256i lo,
                                                                                   __m256i hi, const uint32_t* bp,
                                                                                   __m512i index) {
  // Dword i = (A[2p, row + i], A[2p + 1, row + i]): the pair layout of the packed B's dwords.
  const __m512bh av = reinterpret_cast<__m512bh>(
      _mm512_permutexvar_epi16(index, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)));
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    acc[j] = _mm512_dpbf16_ps(acc[j], av, reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(bp[j]))));
  }
}

QKD_TARGET_AVX512_BF16 void thin_columns_block(const uint16_t* a, int64_t lda, int64_t k_total, int64_t row,
                                               int m_valid, const uint32_t* bp, int64_t p0, int64_t p1, float* acc_io) {
  const __m512i index = interleave_index();
  const __mmask16 mask = lanes16(m_valid);
  __m512 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_load_ps(acc_io + 16 * j);
  const int64_t full = (p1 < k_total / 2 ? p1 : k_total / 2);
  const uint16_t* src = a + 2 * p0 * lda + row;
  bp += p0 * kCols;
  int64_t p = p0;
  for (; p < full; ++p, src += 2 * lda, bp += kCols) {
    thin_columns_step(acc, _mm256_maskz_loadu_epi16(mask, src), _mm256_maskz_loadu_epi16(mask, src + lda), bp, index);
  }
  // The last k alone (its pair partner zero, as the packed B's).
  if (p < p1 && 2 * p < k_total) thin_columns_step(acc, _mm256_maskz_loadu_epi16(mask, src), _mm256_setzero_si256(), bp, index);
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) _mm512_store_ps(acc_io + 16 * j, acc[j]);
}

// C[i, j] (=|+=) the sums in acc (acc[16 j + i]) for i < m_valid, j < n_valid.
QKD_TARGET_AVX512_BF16 void thin_columns_store(const float* acc_in, float* c, int64_t ldc, bool accumulate, int m_valid,
                                               int n_valid) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_load_ps(acc_in + 16 * j);
  // acc[j] lane i = C[i, j]: transposed, row i of C is vector i.
  transpose16x16(acc);
  const __mmask16 cols = lanes16(n_valid);
  for (int i = 0; i < m_valid; ++i) {
    float* out = c + i * ldc;
    __m512 v = acc[i];
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cols, out));
    _mm512_mask_storeu_ps(out, cols, v);
  }
}

// acc[r] += row r's k-pair p of A (kLast: the last k alone, its pair's upper half zero) times B's pairs b0.
template <bool kLast>
__attribute__((always_inline)) QKD_TARGET_AVX512_BF16 inline void thin_rows_step(__m512 (&acc)[kRows],
                                                                                const uint16_t* const (&rows)[kRows],
                                                                                int64_t p, __m512bh b0) {
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    uint32_t pair;
    if (kLast) {
      pair = rows[r][2 * p];
    } else {
      __builtin_memcpy(&pair, rows[r] + 2 * p, sizeof pair);  // A[row + r, 2p], A[row + r, 2p + 1]
    }
    acc[r] = _mm512_dpbf16_ps(acc[r], reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair))), b0);
  }
}

QKD_TARGET_AVX512_BF16 void thin_rows(const uint16_t* a, int64_t lda, int64_t k_total, int64_t row, int m_valid,
                                      const uint32_t* bp, float* c, int64_t ldc, bool accumulate, int n_valid) {
  // Rows past m_valid read the last valid row again (their sums are not stored).
  const uint16_t* rows[kRows];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) rows[r] = a + (row + (r < m_valid ? r : m_valid - 1)) * lda;
  __m512 acc[kRows];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  const int64_t full = k_total / 2;
  for (int64_t p = 0; p < full; ++p, bp += kCols) {
    thin_rows_step<false>(acc, rows, p, reinterpret_cast<__m512bh>(_mm512_load_si512(bp)));
  }
  if (k_total % 2 != 0) thin_rows_step<true>(acc, rows, full, reinterpret_cast<__m512bh>(_mm512_load_si512(bp)));
  const __mmask16 cols = lanes16(n_valid);
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    if (r >= m_valid) break;
    float* out = c + r * ldc;
    __m512 v = acc[r];
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cols, out));
    _mm512_mask_storeu_ps(out, cols, v);
  }
}

const Bf16DotKernel kKernel = {kRows, kCols, compute_tile, pack_a, pack_b, thin_columns_block, thin_columns_store, thin_rows};

}  // namespace

const Bf16DotKernel* avx512_bf16_dot_kernel() { return &kKernel; }

}  // namespace qkd

#else

namespace qkd {
const Bf16DotKernel* avx512_bf16_dot_kernel() { return nullptr; }
}  // namespace qkd

#endif
