// AVX-512 SGEMM micro-kernel: a 14×32 tile of C lives in 28 zmm registers.
//
// Per step k: two 16-float loads of the packed B row, then for each of the
// 14 rows one broadcast of A and two FMAs. 28 independent FMA chains hide
// the 4-cycle FMA latency; loads (16 per 28 FMAs) stay well under the two
// per cycle the core sustains. The A micro-panel (14×KC floats) sits in L1,
// B micro-panels stream from the L2-resident B panel.
//
// Packing is vectorised too (16×16 register transposes for the transposed
// layouts, masked row copies otherwise): scalar packing cost ~10% at 2048².
#include "cpu.h"
#include "gemm_micro.h"
#include "transpose_avx512.h"

#if QKD_X86
#include <immintrin.h>

// GCC 12's _mm512_undefined_ps (used inside some intrinsics) trips
// -Wuninitialized by design; the value is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qkd {
namespace {

constexpr int kRows = 14;     // MR
constexpr int kVectors = 2;   // NR / 16
constexpr int kCols = 16 * kVectors;

QKD_TARGET_AVX512 inline __mmask16 column_mask(int n_valid, int vector) {
  const int left = n_valid - 16 * vector;
  if (left >= 16) return 0xffff;
  if (left <= 0) return 0;
  return static_cast<__mmask16>((1u << left) - 1u);
}

QKD_TARGET_AVX512 void compute_tile(int64_t kc, const float* __restrict ap,
                                    const float* __restrict bp, float* __restrict c, int64_t ldc,
                                    float alpha, float beta, int m_valid, int n_valid) {
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
  }

  // The tile of C is needed only after the k loop, which runs for thousands
  // of cycles: start pulling its rows (strided, so no hardware prefetcher
  // sees them) into L1 now.
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    if (r < m_valid) {
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + kCols - 1), _MM_HINT_T0);
    }
  }

  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) b[v] = _mm512_load_ps(bp + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m512 a = _mm512_set1_ps(ap[r]);
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
    ap += kRows;
    bp += kCols;
  }

  // Masked loads and stores cover the right edge; rows past m_valid are
  // simply skipped. Masked-off lanes are never touched, so a tile at the end
  // of a buffer cannot fault.
  __mmask16 mask[kVectors];
#pragma GCC unroll 4
  for (int v = 0; v < kVectors; ++v) mask[v] = column_mask(n_valid, v);
  const __m512 valpha = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      if (r >= m_valid) break;
      float* row = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) {
        _mm512_mask_storeu_ps(row + 16 * v, mask[v], _mm512_mul_ps(valpha, acc[r][v]));
      }
    }
  } else {
    const __m512 vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      if (r >= m_valid) break;
      float* row = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) {
        const __m512 old = _mm512_maskz_loadu_ps(mask[v], row + 16 * v);
        const __m512 result = _mm512_fmadd_ps(valpha, acc[r][v], _mm512_mul_ps(vbeta, old));
        _mm512_mask_storeu_ps(row + 16 * v, mask[v], result);
      }
    }
  }
}

QKD_TARGET_AVX512 inline __mmask16 low_mask(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xffff)
                     : static_cast<__mmask16>((1u << (count > 0 ? count : 0)) - 1u);
}

// How far ahead (in floats along a row) the packers prefetch.
constexpr int kPrefetchAhead = 64;

// Copies a `rows`-row × kc block whose row i starts at src + i*ld into a
// k-major panel dst[k*width + i] (rows ≤ width ≤ 16·ceil), padding rows up
// to `width` with zeros: 16×16 register transposes along k.
template <int kWidth>
QKD_TARGET_AVX512 void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t kc,
                                       float* dst) {
  static_assert(kWidth % 16 == 0 || kWidth < 16, "width must be below 16 or whole vectors");
  constexpr int kGroups = (kWidth + 15) / 16;
  for (int group = 0; group < kGroups; ++group) {
    const int64_t first = 16 * group;
    const int64_t valid = rows - first < 16 ? rows - first : 16;  // may be ≤ 0
    const int width = kWidth - first < 16 ? kWidth - first : 16;
    const __mmask16 out_mask = low_mask(width);
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const __mmask16 k_mask = low_mask(kc - k0);
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        if (i < valid) {
          const float* row = src + (first + i) * ld + k0;
          _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchAhead), _MM_HINT_T0);
          r[i] = _mm512_maskz_loadu_ps(k_mask, row);
        } else {
          r[i] = _mm512_setzero_ps();
        }
      }
      transpose16x16(r);
      const int64_t steps = kc - k0 < 16 ? kc - k0 : 16;
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
        if (k < steps) _mm512_mask_storeu_ps(dst + (k0 + k) * kWidth + first, out_mask, r[k]);
      }
    }
  }
}

// Copies kc rows of `cols` contiguous floats (row k at src + k*ld) into
// dst[k*width + j], zero-padding columns up to `width`.
template <int kWidth>
QKD_TARGET_AVX512 void pack_rows(const float* src, int64_t ld, int64_t cols, int64_t kc, float* dst) {
  constexpr int kVectorsPerRow = (kWidth + 15) / 16;
  __mmask16 mask[kVectorsPerRow];
  __mmask16 store_mask[kVectorsPerRow];
  for (int v = 0; v < kVectorsPerRow; ++v) {
    mask[v] = low_mask(cols - 16 * v);
    store_mask[v] = low_mask(kWidth - 16 * v);
  }
  for (int64_t k = 0; k < kc; ++k, src += ld, dst += kWidth) {
    _mm_prefetch(reinterpret_cast<const char*>(src + 8 * ld), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int v = 0; v < kVectorsPerRow; ++v) {
      _mm512_mask_storeu_ps(dst + 16 * v, store_mask[v], _mm512_maskz_loadu_ps(mask[v], src + 16 * v));
    }
  }
}

QKD_TARGET_AVX512 void pack_a(const float* a, int64_t lda, bool trans, int64_t row, int64_t rows,
                              int64_t col, int64_t kc, float* dst) {
  if (trans) {
    pack_rows<kRows>(a + col * lda + row, lda, rows, kc, dst);
  } else {
    pack_transposed<kRows>(a + row * lda + col, lda, rows, kc, dst);
  }
}

QKD_TARGET_AVX512 void pack_b(const float* b, int64_t ldb, bool trans, int64_t row, int64_t kc,
                              int64_t col, int64_t cols, float* dst) {
  for (int64_t j0 = 0; j0 < cols; j0 += kCols, dst += kc * kCols) {
    const int64_t width = cols - j0 < kCols ? cols - j0 : kCols;
    if (trans) {
      pack_transposed<kCols>(b + (col + j0) * ldb + row, ldb, width, kc, dst);
    } else {
      pack_rows<kCols>(b + row * ldb + col + j0, ldb, width, kc, dst);
    }
  }
}

const MicroKernel kAvx512Kernel = {
    kRows, kCols, /*kc=*/256, /*nc=*/512, /*mc=*/2100, compute_tile, pack_a, pack_b,
};

}  // namespace

const MicroKernel* avx512_micro_kernel() { return &kAvx512Kernel; }

}  // namespace qkd

#else

namespace qkd {
const MicroKernel* avx512_micro_kernel() { return nullptr; }
}  // namespace qkd

#endif
