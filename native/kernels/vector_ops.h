// Whole-vector reductions and updates of the optimizer step: the global
// gradient norm and the clipping scale.
#pragma once

#include <cstdint>

namespace qkd {

// Σ x[i]² in double over fixed chunks of 65536 values, the chunks added
// in order: the same value for any thread count.
double sum_squares(const float* x, int64_t n);

// x[i] *= s.
void scale_in_place(float* x, int64_t n, float s);

}  // namespace qkd
