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

// The same for a float32 matrix, reduced to tridiagonal form in float32
// (twice the vector width and half the bytes of the double reduction; the
// error is of the order of the float32 rounding already in a Gram matrix
// summed in float32), the tridiagonal eigenvalues in double.
bool symmetric_eigenvalues_f32_with(const float* a, int64_t n, int64_t count, double* out, Isa isa);

// symmetric_eigenvalues_f32 of `batch` matrices packed one after another in
// `a` (sizes[i]² values each), results packed in `out`. Matrix i gives its
// counts[i] largest eigenvalues (descending), then, when heads[i] + tails[i]
// > 0, rows [0, heads[i]) and [n − tails[i], n) of the unit eigenvectors
// of those eigenvalues (row-major, counts[i] columns): counts[i]·(1 +
// heads[i] + tails[i]) values. Each matrix is solved whole on one thread of
// the pool, so the results are those of single calls. Returns −1, or the
// index of a matrix that failed.
int64_t symmetric_eigenvalues_batch(const float* a, const int32_t* sizes, const int32_t* counts, const int32_t* heads,
                                    const int32_t* tails, int64_t batch, double* out);

// symmetric_eigenvalues_batch in the background: copies the matrices, starts
// the solves on a thread of their own and returns a handle (> 0) at once,
// so the caller can go on with other work. Every handle must be waited for.
int64_t eigen_batch_start(const float* a, const int32_t* sizes, const int32_t* counts, const int32_t* heads,
                          const int32_t* tails, int64_t batch);
// Waits for the job `handle` and copies its results (the sum of its counts)
// to out. Returns −1, the index of a matrix that failed, or −2 when the
// handle is unknown (already waited for) and −3 when out is shorter than
// the results (the job is then finished and dropped).
int64_t eigen_batch_wait(int64_t handle, double* out, int64_t capacity);

}  // namespace qkd
