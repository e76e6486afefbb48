/**
 * Small dense linear algebra in float64 for the profiler: eigenvalues of a
 * symmetric matrix, Cholesky (plain and pivoted), and the inverse of a
 * triangular factor. Matrices are row-major n×n Float64Arrays. These run on
 * the small projected matrices of the randomised SVD; the eigenvalues (the
 * one O(n³) step on a few hundred rows) use the backend's kernel.
 */
import { kernels } from '../tensor/backend.js';

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
    let s = a[j * n + j]!;
    for (let k = 0; k < j; k++) s -= L[j * n + k]! * L[j * n + k]!;
    if (!(s > 0)) return null;
    const djj = Math.sqrt(s);
    L[j * n + j] = djj;
    for (let i = j + 1; i < n; i++) {
      let t = a[i * n + j]!;
      for (let k = 0; k < j; k++) t -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = t / djj;
    }
  }
  return L;
}

/** Inverse of a lower-triangular n×n matrix (also lower triangular). */
export function invertLower(L: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    inv[j * n + j] = 1 / L[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += L[i * n + k]! * inv[k * n + j]!;
      inv[i * n + j] = -s / L[i * n + i]!;
    }
  }
  return inv;
}

export interface PivotedCholesky {
  /** The accepted columns, in pivot order. */
  order: number[];
  /** r×r lower factor: a[order[i], order[j]] = (L Lᵀ)[i, j], r = order.length. */
  L: Float64Array;
}

/**
 * Cholesky with diagonal pivoting of the symmetric positive semi-definite
 * n×n `a` (lower triangle read). Each step takes the column whose remaining
 * diagonal (its part not explained by the columns already taken) is largest
 * relative to `scale[i]`, and stops once that ratio is at most `tolerance`:
 * the rest are numerically dependent. Used to orthonormalise a block of
 * vectors while dropping the directions it no longer adds.
 */
export function pivotedCholesky(a: Float64Array, n: number, scale: Float64Array, tolerance: number): PivotedCholesky {
  const rest = new Float64Array(n);
  for (let i = 0; i < n; i++) rest[i] = a[i * n + i]!;
  const taken = new Uint8Array(n);
  const factor = new Float64Array(n * n); // factor[i·n + t]: column t of L at original row i
  const order: number[] = [];
  for (let t = 0; t < n; t++) {
    let best = -1;
    let bestRatio = tolerance;
    for (let i = 0; i < n; i++) {
      const ratio = scale[i]! > 0 ? rest[i]! / scale[i]! : 0;
      if (!taken[i] && ratio > bestRatio) {
        best = i;
        bestRatio = ratio;
      }
    }
    if (best < 0) break;
    const pivot = Math.sqrt(rest[best]!);
    taken[best] = 1;
    order.push(best);
    factor[best * n + t] = pivot;
    for (let i = 0; i < n; i++) {
      if (taken[i]) continue;
      let s = i > best ? a[i * n + best]! : a[best * n + i]!;
      for (let u = 0; u < t; u++) s -= factor[i * n + u]! * factor[best * n + u]!;
      const l = s / pivot;
      factor[i * n + t] = l;
      rest[i]! -= l * l;
    }
  }
  const r = order.length;
  const L = new Float64Array(r * r);
  for (let i = 0; i < r; i++) for (let j = 0; j <= i; j++) L[i * r + j] = factor[order[i]! * n + j]!;
  return { order, L };
}
