/**
 * The pivoted Cholesky factor of a small symmetric positive semi-definite
 * matrix and the inverse of a lower-triangular factor, in float64: the
 * profiler's Krylov pass orthonormalises each new block with them
 * (src/swan/spectrum.ts). Shared by src/swan/linalg.ts and the reference
 * pivotedCholeskyInverse kernel, whose native twin does the same float64
 * operations in the same order (docs/algorithms.md §1).
 */

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
