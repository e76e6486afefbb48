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

/** Inverse of a lower-triangular n×n matrix (also lower triangular). */
export function invertLower(L: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  // Row i from the rows above it: inv[i, j] = −Σ_{k=j..i−1} L[i, k]·inv[k, j] / L[i, i].
  // The sums run over k in ascending order for every j (as a column-by-column
  // loop would), but along rows, so the inner loop reads contiguous memory.
  for (let i = 0; i < n; i++) {
    const row = i * n;
    for (let k = 0; k < i; k++) {
      const l = L[row + k]!;
      const from = k * n;
      for (let j = 0; j <= k; j++) inv[row + j]! += l * inv[from + j]!;
    }
    const d = L[row + i]!;
    for (let j = 0; j < i; j++) inv[row + j] = -inv[row + j]! / d;
    inv[row + i] = 1 / d;
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
    const rb = best * n;
    factor[rb + t] = pivot;
    for (let i = 0; i < n; i++) {
      if (taken[i]) continue;
      const ri = i * n;
      let s = i > best ? a[ri + best]! : a[rb + i]!;
      for (let u = 0; u < t; u++) s -= factor[ri + u]! * factor[rb + u]!;
      const l = s / pivot;
      factor[ri + t] = l;
      rest[i]! -= l * l;
    }
  }
  const r = order.length;
  const L = new Float64Array(r * r);
  for (let i = 0; i < r; i++) for (let j = 0; j <= i; j++) L[i * r + j] = factor[order[i]! * n + j]!;
  return { order, L };
}
