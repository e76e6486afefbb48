// The pieces of a blocked SGEMM that differ per instruction set: the packing
// layout (MR, NR), the cache blocking (KC, NC) and the register-tiled
// micro-kernel. sgemm.cc drives them; see there for the loop nest.
//
// Packed layouts (both zero-padded to a whole tile):
//   A micro-panel: MR rows of op(A) × kc columns, stored k-major: ap[k*MR + r]
//   B panel: nc columns of op(B) × kc rows, as ceil(nc/NR) micro-panels of
//            kc×NR each, stored k-major: bp[(j/NR)*kc*NR + k*NR + j%NR]
#pragma once

#include <cstdint>

namespace qkd {

struct MicroKernel {
  int mr;  // rows of C per micro-tile
  int nr;  // columns of C per micro-tile
  int kc;  // depth of a packed block (an A micro-panel, MR×kc, stays in L1)
  int nc;  // columns of a packed B panel (kc×nc stays in L2)
  int mc;  // rows of a packed A block (mc×kc, a multiple of mr, read from L3)

  // C[0:m_valid, 0:n_valid] = alpha * (ap · bp) + beta * C over `kc` steps;
  // C is not read when beta == 0. m_valid ≤ mr, n_valid ≤ nr.
  void (*compute)(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, float alpha,
                  float beta, int m_valid, int n_valid);

  // Packs rows [row, row+rows) × columns [col, col+kc) of op(A) (rows ≤ mr)
  // into one A micro-panel.
  void (*pack_a)(const float* a, int64_t lda, bool trans, int64_t row, int64_t rows, int64_t col,
                 int64_t kc, float* dst);

  // Packs rows [row, row+kc) × columns [col, col+cols) of op(B) into a B panel.
  void (*pack_b)(const float* b, int64_t ldb, bool trans, int64_t row, int64_t kc, int64_t col,
                 int64_t cols, float* dst);
};

// nullptr when the path is not compiled in (non-x86 builds).
const MicroKernel* avx512_micro_kernel();
const MicroKernel* avx2_micro_kernel();
const MicroKernel* portable_micro_kernel();

}  // namespace qkd
