// Portable packing routines (see gemm_micro.h for the layouts), used by the
// portable and AVX2 kernels; AVX-512 has its own. Transposition is absorbed
// here: the micro-kernels only ever see the packed, k-major panels.
//
// Always inlined, so that a wrapper compiled for a wider ISA (gemm_avx2.cc)
// gets copies vectorised for that ISA.
#pragma once

#include <cstdint>

namespace qkd {

template <int MR>
inline __attribute__((always_inline)) void pack_a_panel(const float* a, int64_t lda, bool trans, int64_t row, int64_t rows, int64_t col,
                  int64_t kc, float* dst) {
  if (trans) {
    // op(A)[r, k] = A[k*lda + r]: each k reads `rows` contiguous floats.
    const float* src = a + col * lda + row;
    for (int64_t k = 0; k < kc; ++k, src += lda, dst += MR) {
      int64_t r = 0;
      for (; r < rows; ++r) dst[r] = src[r];
      for (; r < MR; ++r) dst[r] = 0.0f;
    }
    return;
  }
  // op(A)[r, k] = A[r*lda + k]: a small transpose, one row at a time.
  for (int64_t r = 0; r < MR; ++r) {
    if (r < rows) {
      const float* src = a + (row + r) * lda + col;
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = src[k];
    } else {
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = 0.0f;
    }
  }
}

template <int NR>
inline __attribute__((always_inline)) void pack_b_panel(const float* b, int64_t ldb, bool trans, int64_t row, int64_t kc, int64_t col,
                  int64_t cols, float* dst) {
  for (int64_t j0 = 0; j0 < cols; j0 += NR, dst += kc * NR) {
    const int64_t width = cols - j0 < NR ? cols - j0 : NR;
    if (!trans) {
      // op(B)[k, j] = B[k*ldb + j]: each k copies `width` contiguous floats.
      const float* src = b + row * ldb + col + j0;
      for (int64_t k = 0; k < kc; ++k, src += ldb) {
        float* out = dst + k * NR;
        if (width == NR) {
          for (int j = 0; j < NR; ++j) out[j] = src[j];
        } else {
          int64_t j = 0;
          for (; j < width; ++j) out[j] = src[j];
          for (; j < NR; ++j) out[j] = 0.0f;
        }
      }
    } else {
      // op(B)[k, j] = B[j*ldb + k]: each column j is contiguous in k.
      for (int64_t j = 0; j < NR; ++j) {
        if (j < width) {
          const float* src = b + (col + j0 + j) * ldb + row;
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = 0.0f;
        }
      }
    }
  }
}

}  // namespace qkd
