/**
 * Symmetric eigen-decomposition in float64 (tred2-style Householder
 * reduction + implicit-shift QL), with or without eigenvectors. Shared by the
 * reference symmetricEigenvalues kernel (the profiler's Ritz values) and the
 * SVD student initialisation (which needs the vectors).
 */
import { QkdError } from '../errors.js';

/**
 * Eigen-decomposition of a symmetric n×n matrix (row-major, float64):
 * values descending, vectors as the matching columns of an n×n matrix.
 * Householder reduction to tridiagonal form with the transform kept, then
 * implicit-shift QL iterations (the classic tred2 / tql2 scheme), O(n³) with
 * a small constant: about a second at n = 512. The transform is stored
 * transposed so every update runs along contiguous rows.
 */
export function symmetricEigen(matrix: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(matrix.subarray(0, n * n));
  const qt = new Float64Array(n * n); // Qᵀ, with A = Q T Qᵀ
  for (let i = 0; i < n; i++) qt[i * n + i] = 1;
  const d = tridiagonalEigen(a, qt, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y]! - d[x]! || x - y);
  const values = Float64Array.from(order, (i) => d[i]!);
  const vectors = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const row = order[k]! * n;
    for (let r = 0; r < n; r++) vectors[r * n + k] = qt[row + r]!;
  }
  return { values, vectors };
}

/**
 * Eigenvalues only (no transform kept), descending. Only the lower triangle
 * of `matrix` is read.
 */
export function symmetricEigenvaluesOnly(matrix: Float64Array, n: number): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = matrix[i * n + j]!;
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  return tridiagonalEigen(a, null, n).sort().reverse();
}

/** Tridiagonalises a in place (qt accumulates the transform when given) and returns the eigenvalues, unsorted. */
function tridiagonalEigen(a: Float64Array, qt: Float64Array | null, n: number): Float64Array {
  tridiagonalise(a, qt, n);
  const d = new Float64Array(n);
  const e = new Float64Array(n); // e[i] couples i and i + 1
  for (let i = 0; i < n; i++) d[i] = a[i * n + i]!;
  for (let i = 0; i + 1 < n; i++) e[i] = a[(i + 1) * n + i]!;
  tridiagonalQl(d, e, qt, n);
  return d;
}

/**
 * In place: a ← T = Hₖ…H₀ a H₀…Hₖ (tridiagonal), qt ← Hₖ…H₀ qt. Each
 * reflector H = I − 2vvᵀ zeroes one column below the subdiagonal; the
 * trailing block is updated as A − 2(v wᵀ + w vᵀ) with p = A v,
 * w = p − (vᵀp) v.
 */
function tridiagonalise(a: Float64Array, qt: Float64Array | null, n: number): void {
  const v = new Float64Array(n);
  const w = new Float64Array(n);
  const u = new Float64Array(n);
  for (let k = 0; k + 2 < n; k++) {
    const first = k + 1;
    const len = n - first;
    let norm = 0;
    for (let i = 0; i < len; i++) norm += a[(first + i) * n + k]! ** 2;
    norm = Math.sqrt(norm);
    if (norm === 0) continue;
    const x0 = a[first * n + k]!;
    const alpha = x0 >= 0 ? -norm : norm;
    for (let i = 0; i < len; i++) v[i] = a[(first + i) * n + k]!;
    v[0] = x0 - alpha;
    let vNorm = 0;
    for (let i = 0; i < len; i++) vNorm += v[i]! ** 2;
    vNorm = Math.sqrt(vNorm);
    if (vNorm === 0) continue;
    for (let i = 0; i < len; i++) v[i]! /= vNorm;
    // Column / row k become (alpha, 0, ..., 0).
    for (let i = 0; i < len; i++) {
      const value = i === 0 ? alpha : 0;
      a[(first + i) * n + k] = value;
      a[k * n + first + i] = value;
    }
    // p = A_sub v, K = vᵀp, w = p − K v.
    let K = 0;
    for (let i = 0; i < len; i++) {
      let p = 0;
      const row = (first + i) * n + first;
      for (let j = 0; j < len; j++) p += a[row + j]! * v[j]!;
      w[i] = p;
      K += v[i]! * p;
    }
    for (let i = 0; i < len; i++) w[i]! -= K * v[i]!;
    for (let i = 0; i < len; i++) {
      const row = (first + i) * n + first;
      const vi = v[i]!;
      const wi = w[i]!;
      for (let j = 0; j < len; j++) a[row + j]! -= 2 * (vi * w[j]! + wi * v[j]!);
    }
    // qt rows first.. ← H qt rows first..: u = vᵀ qt_sub, qt_sub −= 2 v uᵀ.
    if (qt === null) continue;
    u.fill(0);
    for (let i = 0; i < len; i++) {
      const row = (first + i) * n;
      const vi = v[i]!;
      for (let j = 0; j < n; j++) u[j]! += vi * qt[row + j]!;
    }
    for (let i = 0; i < len; i++) {
      const row = (first + i) * n;
      const vi = 2 * v[i]!;
      for (let j = 0; j < n; j++) qt[row + j]! -= vi * u[j]!;
    }
  }
}

/**
 * Eigenvalues of the symmetric tridiagonal (d, e) by implicit-shift QL
 * (Wilkinson-style shift from the leading 2×2 block); every plane rotation
 * is also applied to rows i, i + 1 of qt (when given), which ends holding
 * the eigenvectors of the original matrix as rows.
 */
function tridiagonalQl(d: Float64Array, e: Float64Array, qt: Float64Array | null, n: number): void {
  for (let l = 0; l < n; l++) {
    for (let iteration = 0; ; iteration++) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]!) + Math.abs(d[m + 1]!);
        if (Math.abs(e[m]!) <= Number.EPSILON * dd) break;
      }
      if (m === l) break;
      if (iteration >= 100) throw new QkdError('STATE', `symmetricEigen: QL iteration did not converge for eigenvalue ${l} of ${n}`);
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!);
      let r = Math.hypot(g, 1);
      g = d[m]! - d[l]! + e[l]! / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i]!;
        const b = c * e[i]!;
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1]! -= p;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1]! - p;
        r = (d[i]! - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        if (qt === null) continue;
        const ri = i * n;
        const rj = (i + 1) * n;
        for (let k = 0; k < n; k++) {
          const x = qt[rj + k]!;
          qt[rj + k] = s * qt[ri + k]! + c * x;
          qt[ri + k] = c * qt[ri + k]! - s * x;
        }
      }
      if (underflow) continue;
      d[l]! -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
}

