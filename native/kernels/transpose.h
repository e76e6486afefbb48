// dst [cols, rows] = transpose of src [rows, cols], both row-major and
// contiguous: dst[c·rows + r] = src[r·cols + c]. A pure copy, so every path
// gives the same bits. Used where a layout change sits between two kernels
// (the frozen bf16 teacher's Linear: x → xᵀ before the bf16 GEMM, yᵀ → y
// after it).
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

// src and dst must not overlap.
void transpose(const float* src, float* dst, int64_t rows, int64_t cols);
void transpose_with(const float* src, float* dst, int64_t rows, int64_t cols, Isa isa, int max_threads);

}  // namespace qkd
