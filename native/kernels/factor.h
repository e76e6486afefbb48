// Pivoted Cholesky and the inverse of its factor for the profiler's small
// projected matrices (src/tensor/factor.ts is the reference: the same
// float64 operations in the same order, so the same bits).
#pragma once

#include <cstdint>

namespace qkd {

// See the pivotedCholeskyInverse kernel (native/kernels.mjs). work holds
// n·n + n doubles. Returns r.
int64_t pivoted_cholesky_inverse(const double* a, int64_t n, const double* scale, double tolerance, double* order,
                                 double* diag, double* inverse, double* work);

}  // namespace qkd
