// Per-ISA row loops behind softmax.h (see softmax.cc for the driver).
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

struct SoftmaxRows {
  void (*forward)(const float* x, float* y, int64_t rows, int64_t cols);
  void (*backward)(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols);
  void (*exp)(const float* x, float* y, int64_t count);
};

// nullptr when the path is not compiled in (non-x86 builds).
const SoftmaxRows* avx512_softmax_rows();
const SoftmaxRows* avx2_softmax_rows();
const SoftmaxRows* portable_softmax_rows();

// The rows of `isa`, lowered to what the CPU has (like QKD_ISA).
const SoftmaxRows& softmax_rows_for(Isa isa);

// The rare row whose maximum is -Infinity: all -Infinity gives zeros, but a
// NaN hiding among them (max() may skip it) makes the row NaN.
void softmax_row_without_maximum(const float* x, float* y, int64_t cols);

}  // namespace qkd
