// AVX2 SGEMM micro-kernel: a 6×16 tile of C lives in 12 ymm registers
// (two 8-float vectors per row), leaving room for the two B vectors and the
// A broadcast within the 16 registers AVX2 has.
#include "cpu.h"
#include "gemm_micro.h"
#include "gemm_pack.h"

#if QKD_X86
#include <immintrin.h>

namespace qkd {
namespace {

constexpr int kRows = 6;
constexpr int kVectors = 2;
constexpr int kCols = 8 * kVectors;

QKD_TARGET_AVX2 void compute_tile(int64_t kc, const float* __restrict ap,
                                  const float* __restrict bp, float* __restrict c, int64_t ldc,
                                  float alpha, float beta, int m_valid, int n_valid) {
  __m256 acc[kRows][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_setzero_ps();
  }

  for (int64_t k = 0; k < kc; ++k) {
    __m256 b[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) b[v] = _mm256_load_ps(bp + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m256 a = _mm256_broadcast_ss(ap + r);
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
    }
    ap += kRows;
    bp += kCols;
  }

  const __m256 valpha = _mm256_set1_ps(alpha);
  if (m_valid == kRows && n_valid == kCols) {
    if (beta == 0.0f) {
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) {
          _mm256_storeu_ps(c + r * ldc + 8 * v, _mm256_mul_ps(valpha, acc[r][v]));
        }
      }
    } else {
      const __m256 vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) {
          float* out = c + r * ldc + 8 * v;
          const __m256 old = _mm256_loadu_ps(out);
          _mm256_storeu_ps(out, _mm256_fmadd_ps(valpha, acc[r][v], _mm256_mul_ps(vbeta, old)));
        }
      }
    }
    return;
  }

  // Edge tile: spill the scaled product and merge only the valid part.
  alignas(32) float tile[kRows][kCols];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) _mm256_store_ps(&tile[r][8 * v], _mm256_mul_ps(valpha, acc[r][v]));
  }
  for (int r = 0; r < m_valid; ++r) {
    float* out = c + r * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < n_valid; ++j) out[j] = tile[r][j];
    } else {
      for (int j = 0; j < n_valid; ++j) out[j] = tile[r][j] + beta * out[j];
    }
  }
}

QKD_TARGET_AVX2 void pack_a(const float* a, int64_t lda, bool trans, int64_t row, int64_t rows, int64_t col,
                            int64_t kc, float* dst) {
  pack_a_panel<kRows>(a, lda, trans, row, rows, col, kc, dst);
}

QKD_TARGET_AVX2 void pack_b(const float* b, int64_t ldb, bool trans, int64_t row, int64_t kc, int64_t col,
                            int64_t cols, float* dst) {
  pack_b_panel<kCols>(b, ldb, trans, row, kc, col, cols, dst);
}

const MicroKernel kAvx2Kernel = {
    kRows, kCols, /*kc=*/256, /*nc=*/512, /*mc=*/2100, compute_tile, pack_a, pack_b,
};

}  // namespace

const MicroKernel* avx2_micro_kernel() { return &kAvx2Kernel; }

}  // namespace qkd

#else

namespace qkd {
const MicroKernel* avx2_micro_kernel() { return nullptr; }
}  // namespace qkd

#endif
