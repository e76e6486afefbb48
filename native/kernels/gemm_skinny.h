// Matrix products with very few rows (or, transposed, very few columns):
// the shape of decoding one token (M = 1) or of a matrix-vector product.
// They are bound by streaming the big operand from memory once, so they
// skip packing and the register-tiled kernel (whose tiles would be mostly
// padding) and run plain loops that the compiler vectorises for each ISA.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

// A matrix operand seen through an optional transpose: for the left
// operand L (rows×K) L[i,k] = trans ? data[k*ld + i] : data[i*ld + k]; for
// the right operand R (K×cols) R[k,j] = trans ? data[j*ld + k] : data[k*ld + j].
struct SkinnyOperand {
  const float* data;
  int64_t ld;
  bool trans;
};

// C[i,j] = alpha * Σ_k L[i,k] R[k,j] + beta * C[i,j] for i < rows (small),
// j in [col_begin, col_end); C[i,j] lives at c[i*c_row_stride + j*c_col_stride].
// C is not read when beta == 0. Returns false if scratch memory ran out.
struct SkinnyProblem {
  int64_t rows, cols, k;
  float alpha, beta;
  SkinnyOperand left, right;
  float* c;
  int64_t c_row_stride, c_col_stride;
};

bool skinny_gemm(const SkinnyProblem& p, int64_t col_begin, int64_t col_end, Isa isa);

}  // namespace qkd
