/**
 * Small dense linear algebra in float64 for the profiler: eigenvalues of a
 * symmetric matrix (Householder tridiagonalisation + implicit QL), Cholesky,
 * and the inverse of a triangular factor. Matrices are row-major n×n
 * Float64Arrays. These run on the k×k sketches of the randomised SVD (k ≤ a
 * few hundred), so O(k³) in TypeScript is cheap next to the GEMMs.
 */
import { QkdError } from '../errors.js';

/**
 * Eigenvalues of the symmetric n×n matrix `a` (only the lower triangle is
 * read; `a` is not modified), in descending order.
 */
export function symmetricEigenvalues(a: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(a.subarray(0, n * n));
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  tridiagonalize(m, n, d, e);
  tridiagonalEigenvalues(d, e, n);
  return d.sort().reverse();
}

/**
 * Householder reduction of a symmetric matrix to tridiagonal form (the
 * classical tred2 scheme without accumulating the transforms): d gets the
 * diagonal, e[1..n-1] the sub-diagonal.
 */
function tridiagonalize(a: Float64Array, n: number, d: Float64Array, e: Float64Array): void {
  for (let i = n - 1; i > 0; i--) {
    const l = i - 1;
    let h = 0;
    if (l > 0) {
      let scale = 0;
      for (let k = 0; k <= l; k++) scale += Math.abs(a[i * n + k]!);
      if (scale === 0) {
        e[i] = a[i * n + l]!;
      } else {
        for (let k = 0; k <= l; k++) {
          a[i * n + k]! /= scale;
          h += a[i * n + k]! * a[i * n + k]!;
        }
        let f = a[i * n + l]!;
        const g = f >= 0 ? -Math.sqrt(h) : Math.sqrt(h);
        e[i] = scale * g;
        h -= f * g;
        a[i * n + l] = f - g;
        f = 0;
        for (let j = 0; j <= l; j++) {
          let gj = 0;
          for (let k = 0; k <= j; k++) gj += a[j * n + k]! * a[i * n + k]!;
          for (let k = j + 1; k <= l; k++) gj += a[k * n + j]! * a[i * n + k]!;
          e[j] = gj / h;
          f += e[j]! * a[i * n + j]!;
        }
        const hh = f / (h + h);
        for (let j = 0; j <= l; j++) {
          const fj = a[i * n + j]!;
          const gj = (e[j] = e[j]! - hh * fj);
          for (let k = 0; k <= j; k++) a[j * n + k]! -= fj * e[k]! + gj * a[i * n + k]!;
        }
      }
    } else {
      e[i] = a[i * n + l]!;
    }
    d[i] = h;
  }
  for (let i = 0; i < n; i++) d[i] = a[i * n + i]!;
}

/** Implicit QL with Wilkinson shifts on a tridiagonal matrix; d becomes the eigenvalues. */
function tridiagonalEigenvalues(d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!;
  if (n > 0) e[n - 1] = 0;
  for (let l = 0; l < n; l++) {
    let iterations = 0;
    for (;;) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]!) + Math.abs(d[m + 1]!);
        if (Math.abs(e[m]!) <= Number.EPSILON * dd) break;
      }
      if (m === l) break;
      if (++iterations > 60) throw new QkdError('ARGUMENT', 'symmetricEigenvalues: QL iteration did not converge', { hint: 'a finite symmetric matrix' });
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!);
      let r = Math.hypot(g, 1);
      g = d[m]! - d[l]! + e[l]! / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      for (; i >= l; i--) {
        let f = s * e[i]!;
        const b = c * e[i]!;
        e[i + 1] = r = Math.hypot(f, g);
        if (r === 0) {
          d[i + 1]! -= p;
          e[m] = 0;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1]! - p;
        r = (d[i]! - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (r === 0 && i >= l) continue;
      d[l]! -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
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
