// Batched single-precision matrix multiply, row-major, BLAS semantics.
//
// Legend: M rows of C, N columns of C, K the shared (reduced) dimension.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

struct SgemmArgs {
  int64_t batch = 1;
  bool trans_a = false;  // op(A)[m,k] = trans_a ? A[k*lda + m] : A[m*lda + k]
  bool trans_b = false;  // op(B)[k,n] = trans_b ? B[n*ldb + k] : B[k*ldb + n]
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;  // batch × (M×K or K×M), element stride_a between matrices
  int64_t lda = 0, stride_a = 0;
  const float* b = nullptr;  // batch × (K×N or N×K), element stride_b between matrices
  int64_t ldb = 0, stride_b = 0;
  float beta = 0.0f;
  float* c = nullptr;  // batch × M×N, element stride_c between matrices
  int64_t ldc = 0, stride_c = 0;
};

// For each i in [0, batch): C_i = alpha * op(A_i) * op(B_i) + beta * C_i.
//
// Like BLAS: when beta == 0, C is only written, never read (NaN in C does not
// leak); when alpha == 0 or K == 0, A and B are not read and C = beta * C.
// stride_a or stride_b may be 0 (one operand shared across the batch). The
// caller guarantees the buffers are long enough and that the C_i do not
// overlap each other or A and B (stride_c == 0 with batch > 1 is run in
// order, one matrix after the other).
//
// Returns false only if the packing buffers could not be allocated (C is
// then partly written).
bool sgemm(const SgemmArgs& args);

// The same on a chosen path and at most `max_threads` threads (tests and
// benchmarks). An isa the CPU lacks falls back like QKD_ISA does.
bool sgemm_with(const SgemmArgs& args, Isa isa, int max_threads);

}  // namespace qkd
