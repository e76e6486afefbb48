// Row-wise softmax, forward and backward, over contiguous rows.
//
// Legend: R rows, C columns (the softmax axis).
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

// y[r,:] = softmax(x[r,:]) = exp(x[r,:] - max) / Σ exp(x[r,:] - max).
//   x: R×C, y: R×C; x == y (in place) is allowed, partial overlap is not.
// Special rows: a row of all -Infinity gives all zeros (not NaN: such a row
// is what a fully masked attention row looks like); a row holding NaN, or
// +Infinity, gives all NaN.
void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols);

// dx[r,c] += y[r,c] * (dy[r,c] - Σ_c' y[r,c'] dy[r,c'])   (accumulates)
//   y: R×C (the forward output), dy: R×C, dx: R×C.
// The dot product is accumulated in double. dx may be dy (in place).
void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols);

// The same on a chosen path and at most `max_threads` threads (tests).
void softmax_forward_with(const float* x, float* y, int64_t rows, int64_t cols, Isa isa,
                          int max_threads);
void softmax_backward_with(const float* y, const float* dy, float* dx, int64_t rows,
                           int64_t cols, Isa isa, int max_threads);

// y[i] = exp(x[i]) with the path's exp (the vectorised exp of the SIMD
// paths, std::exp on the portable one). For accuracy tests.
void exp_with(const float* x, float* y, int64_t count, Isa isa);

}  // namespace qkd
