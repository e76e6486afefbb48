// Eigenvalues of a small dense symmetric matrix in double: the Rayleigh–Ritz
// step of the profiler's randomised SVD (matrices of a few hundred rows,
// one per weight tensor), where the TypeScript version took ~30 ms each.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

// The `count` largest eigenvalues of the symmetric n×n row-major matrix `a`
// (only the lower triangle is read; `a` is not modified) into
// out[0, count), descending. Householder reduction to tridiagonal form on a
// copy of the lower triangle, then implicit QL with Wilkinson shifts for all
// of them (the scheme of the TypeScript reference), or bisection on Sturm
// counts when only a few are wanted; either way accurate to a few ulps of
// ‖a‖. Returns false for input that is not finite (or when the QL iteration
// does not converge, or scratch memory is short).
bool symmetric_eigenvalues(const double* a, int64_t n, int64_t count, double* out);
bool symmetric_eigenvalues_with(const double* a, int64_t n, int64_t count, double* out, Isa isa);

// symmetric_eigenvalues of `batch` matrices packed one after another in `a`
// (sizes[i]² values each), counts[i] results each packed in `out`. Each
// matrix is solved whole on one thread of the pool, so the results are
// those of single calls. Returns −1, or the index of a matrix that failed.
int64_t symmetric_eigenvalues_batch(const double* a, const int32_t* sizes, const int32_t* counts, int64_t batch,
                                    double* out);

}  // namespace qkd
