/**
 * Top singular values of a weight matrix by randomised subspace iteration
 * (Halko, Martinsson & Tropp), with every O(m·n·k) product on the backend's
 * GEMM. Used for the spectral-concentration metric of SPEC section 1.
 *
 * For W [m, n] and a sketch width ℓ = k + oversample:
 *   Y = W Ω (Ω Gaussian n×ℓ), then q times: Z = Wᵀ orth(Y), Y = W orth(Z).
 * The singular values of the final Y = W·Q (Q an orthonormal basis of the
 * approximate top right-singular subspace) are the estimates: they converge
 * from below to σ_1..σ_ℓ. 2q + 1 passes over W in all.
 *
 * Orthonormalisation is CholeskyQR run twice on float32 Gram matrices
 * (shifted on the first pass so a rank-deficient sketch still factors):
 * subspace iteration only needs a well-conditioned basis of the same span.
 */
import { kernels } from '../tensor/backend.js';
import { Rng } from '../tensor/random.js';
import { cholesky, invertLower, symmetricEigenvalues } from './linalg.js';

export interface SpectrumOptions {
  /** Rank cap of the sketch (SPEC: k ≤ 256). */
  maxRank?: number;
  /** Power (subspace) iterations q. */
  powerIterations?: number;
  /**
   * Extra sketch columns beyond the rank needed (default max(8, k): a sketch
   * twice the rank keeps the top-10% energy within 0.01 of exact even on flat,
   * Gaussian-like spectra with q = 2, where the estimate converges slowest).
   */
  oversample?: number;
  /** Seeded generator for the Gaussian test matrix. */
  rng: Rng;
}

export interface SpectrumSummary {
  /** Σ of the top-r σ_i² / ‖W‖_F², r = ceil(0.1 · min(m, n)). */
  concentration: number;
  /** σ_max / ‖W‖_F. */
  sigmaMaxOverFro: number;
  /** r: how many singular values the top 10% holds. */
  topCount: number;
  /** True when r exceeded the rank cap and the tail of the top 10% was estimated. */
  estimatedTail: boolean;
}

/** Estimates of the top min(k + oversample, min(m, n)) singular values of W, descending. */
export function topSingularValues(w: Float32Array, rows: number, cols: number, k: number, options: SpectrumOptions): Float64Array {
  const q = options.powerIterations ?? 2;
  const p = Math.min(rows, cols);
  const width = Math.min(p, k + (options.oversample ?? Math.max(8, k)));
  if (width === 0) return new Float64Array(0);
  const gemm = kernels().sgemm;
  const omega = new Float32Array(cols * width);
  for (let i = 0; i < omega.length; i++) omega[i] = options.rng.normal();
  // Y = W Ω  [rows, width]
  let y = new Float32Array(rows * width);
  gemm({ batch: 1, transA: false, transB: false, M: rows, N: width, K: cols, alpha: 1, a: w, lda: cols, strideA: 0, b: omega, ldb: width, strideB: 0, beta: 0, c: y, ldc: width, strideC: 0 });
  const z = omega; // reuse: [cols, width]
  for (let it = 0; it < q; it++) {
    const qy = orthonormalize(y, rows, width);
    // Z = Wᵀ Q  [cols, width]
    gemm({ batch: 1, transA: true, transB: false, M: cols, N: width, K: rows, alpha: 1, a: w, lda: cols, strideA: 0, b: qy, ldb: width, strideB: 0, beta: 0, c: z, ldc: width, strideC: 0 });
    const qz = orthonormalize(z, cols, width);
    // Y = W Q_z  [rows, width]
    gemm({ batch: 1, transA: false, transB: false, M: rows, N: width, K: cols, alpha: 1, a: w, lda: cols, strideA: 0, b: qz, ldb: width, strideB: 0, beta: 0, c: y, ldc: width, strideC: 0 });
  }
  if (q === 0) {
    // Without iterations Y = W Ω is not W·(orthonormal); project instead: σ(Qᵀ W).
    const qy = orthonormalize(y, rows, width);
    y = new Float32Array(cols * width);
    gemm({ batch: 1, transA: true, transB: false, M: cols, N: width, K: rows, alpha: 1, a: w, lda: cols, strideA: 0, b: qy, ldb: width, strideB: 0, beta: 0, c: y, ldc: width, strideC: 0 });
    return singularValuesOf(y, cols, width);
  }
  return singularValuesOf(y, rows, width);
}

/** Singular values of a tall [n, width] float32 matrix via its Gram matrix, descending. */
function singularValuesOf(y: Float32Array, n: number, width: number): Float64Array {
  const g = gram(y, n, width);
  const eig = symmetricEigenvalues(g, width);
  return eig.map((v) => Math.sqrt(Math.max(0, v)));
}

/** YᵀY [width, width] in float64 (computed by the float32 GEMM). */
function gram(y: Float32Array, n: number, width: number): Float64Array {
  const g32 = new Float32Array(width * width);
  kernels().sgemm({ batch: 1, transA: true, transB: false, M: width, N: width, K: n, alpha: 1, a: y, lda: width, strideA: 0, b: y, ldb: width, strideB: 0, beta: 0, c: g32, ldc: width, strideC: 0 });
  const g = new Float64Array(width * width);
  // Symmetrise: the two triangles can differ in the last bits.
  for (let i = 0; i < width; i++) for (let j = 0; j < width; j++) g[i * width + j] = 0.5 * (g32[i * width + j]! + g32[j * width + i]!);
  return g;
}

/** An orthonormal-ish basis of span(Y) [n, width]: CholeskyQR twice, the first shifted. */
function orthonormalize(y: Float32Array, n: number, width: number): Float32Array {
  let basis = y;
  for (const relativeShift of [1e-5, 1e-7]) basis = choleskyQrStep(basis, n, width, relativeShift);
  return basis;
}

function choleskyQrStep(y: Float32Array, n: number, width: number, relativeShift: number): Float32Array {
  const g = gram(y, n, width);
  let trace = 0;
  for (let i = 0; i < width; i++) trace += g[i * width + i]!;
  if (!(trace > 0)) return y; // a zero sketch: nothing to orthonormalise
  let shift = (relativeShift * trace) / width;
  let L: Float64Array | null = null;
  for (let attempt = 0; attempt < 8 && L === null; attempt++, shift *= 100) {
    const shifted = Float64Array.from(g);
    for (let i = 0; i < width; i++) shifted[i * width + i]! += shift;
    L = cholesky(shifted, width);
  }
  if (L === null) return y;
  // Q = Y L⁻ᵀ
  const inv = Float32Array.from(invertLower(L, width));
  const out = new Float32Array(n * width);
  kernels().sgemm({ batch: 1, transA: false, transB: true, M: n, N: width, K: width, alpha: 1, a: y, lda: width, strideA: 0, b: inv, ldb: width, strideB: 0, beta: 0, c: out, ldc: width, strideC: 0 });
  return out;
}

/**
 * Spectral concentration c = Σ_{i ≤ r} σ_i² / ‖W‖_F² with r = ceil(0.1 · min(m, n)),
 * and σ_max/‖W‖_F. ‖W‖_F² is exact (float64 sum). When r exceeds the rank
 * cap k, σ_{k+1..r} are not sketched: their energy lies between the even
 * share (r−k)/(p−k) of the residual and min(residual, (r−k)·σ_k²), and the
 * midpoint of those bounds is used (flagged as estimatedTail).
 */
export function spectralSummary(w: Float32Array, rows: number, cols: number, frobenius2: number, options: SpectrumOptions): SpectrumSummary {
  const p = Math.min(rows, cols);
  const r = Math.max(1, Math.ceil(0.1 * p));
  const cap = options.maxRank ?? 256;
  const k = Math.min(r, cap);
  if (!(frobenius2 > 0) || p === 0) return { concentration: 0, sigmaMaxOverFro: 0, topCount: r, estimatedTail: false };
  const sigma = topSingularValues(w, rows, cols, k, options);
  let top = 0;
  for (let i = 0; i < k; i++) top += sigma[i]! ** 2;
  let estimatedTail = false;
  if (r > k) {
    const residual = Math.max(0, frobenius2 - top);
    const low = (residual * (r - k)) / (p - k);
    const high = Math.min(residual, (r - k) * sigma[k - 1]! ** 2);
    top += 0.5 * (low + high);
    estimatedTail = true;
  }
  const fro = Math.sqrt(frobenius2);
  return { concentration: Math.min(1, top / frobenius2), sigmaMaxOverFro: Math.min(1, sigma[0]! / fro), topCount: r, estimatedTail };
}
