/**
 * Small dense linear algebra in float64 for the profiler: eigenvalues of a
 * symmetric matrix, Cholesky (plain and pivoted), and the inverse of a
 * triangular factor. Matrices are row-major n×n Float64Arrays. These run on
 * the small projected matrices of the randomised SVD; the eigenvalues (the
 * one O(n³) step on a few hundred rows) use the backend's kernel.
 */
import { kernels } from '../tensor/backend.js';

export { invertLower, pivotedCholesky, type PivotedCholesky } from '../tensor/factor.js';

/**
 * The `count` (default all) largest eigenvalues of the symmetric n×n matrix
 * `a` (only the lower triangle is read; `a` is not modified), in descending
 * order: the backend's kernel (Householder tridiagonalisation, then
 * implicit QL, or bisection when only a few are wanted).
 */
export function symmetricEigenvalues(a: Float64Array, n: number, count = n): Float64Array {
  const out = new Float64Array(count);
  if (count > 0) kernels().symmetricEigenvalues(a, n, count, out);
  return out;
}

/**
 * Lower Cholesky factor L of the symmetric positive-definite n×n matrix `a`
 * (a = L Lᵀ). Returns null when a pivot is not positive.
 */
export function cholesky(a: Float64Array, n: number): Float64Array | null {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let s = a[rj + j]!;
    for (let k = 0; k < j; k++) s -= L[rj + k]! * L[rj + k]!;
    if (!(s > 0)) return null;
    const djj = Math.sqrt(s);
    L[rj + j] = djj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let t = a[ri + j]!;
      for (let k = 0; k < j; k++) t -= L[ri + k]! * L[rj + k]!;
      L[ri + j] = t / djj;
    }
  }
  return L;
}
