/**
 * The four data-free sensitivity metrics of SPEC section 1, on a weight
 * viewed as [rows, cols] = [out, in], plus their scores and the composite.
 * Reductions that decide a metric accumulate in float64.
 */
import { kernels } from '../tensor/backend.js';
import { Rng } from '../tensor/random.js';
import type { MetricScores } from './types.js';

/** Sum of squares in float64. */
export function frobeniusSquared(w: Float32Array): number {
  let s0 = 0;
  let s1 = 0;
  const n = w.length;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    s0 += w[i]! * w[i]!;
    s1 += w[i + 1]! * w[i + 1]!;
  }
  if (i < n) s0 += w[i]! * w[i]!;
  return s0 + s1;
}

/**
 * Excess kurtosis κ = mean((w−μ)⁴)/σ⁴ − 3 over all entries (population
 * moments, two passes in float64 so a large mean does not cancel). A constant
 * tensor has κ = 0 by convention (no tails to speak of).
 */
export function excessKurtosis(w: Float32Array): number {
  const n = w.length;
  if (n === 0) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i]!;
  const mean = sum / n;
  let m2 = 0;
  let m4 = 0;
  for (let i = 0; i < n; i++) {
    const d = w[i]! - mean;
    const d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= n;
  m4 /= n;
  if (!(m2 > 0)) return 0;
  return m4 / (m2 * m2) - 3;
}

/** Per-row b-bit asymmetric step Δ_r = (max_r − min_r)/(2^b − 1). */
export function rowSteps(w: Float32Array, rows: number, cols: number, bits: number): Float64Array {
  const steps = new Float64Array(rows);
  const levels = 2 ** bits - 1;
  for (let r = 0; r < rows; r++) {
    let lo = Infinity;
    let hi = -Infinity;
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const v = w[base + c]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    steps[r] = cols > 0 ? (hi - lo) / levels : 0;
  }
  return steps;
}

/**
 * Reconstruction error proxy e = ‖Q_b(W) − W‖_F / ‖W‖_F with Q_b the b-bit
 * per-output-channel asymmetric round-to-nearest quantizer (the backend's
 * fake-quant kernel, SPEC section 2). `scratch` (≥ rows·cols) avoids an
 * allocation per call.
 */
export function reconstructionError(w: Float32Array, rows: number, cols: number, bits: number, frobenius2: number, scratch?: Float32Array): number {
  if (!(frobenius2 > 0)) return 0;
  const n = rows * cols;
  const out = scratch && scratch.length >= n ? scratch.subarray(0, n) : new Float32Array(n);
  kernels().fakeQuantForward(w, out, new Uint8Array(0), rows, cols, bits, false, 1, cols, 1);
  let err = 0;
  for (let i = 0; i < n; i++) {
    const d = out[i]! - w[i]!;
    err += d * d;
  }
  return Math.sqrt(err / frobenius2);
}

export interface NoiseOptions {
  bits: number;
  probes: number;
  rng: Rng;
}

/**
 * Output noise amplification a = mean over K Gaussian probes x of
 * ‖E x‖ / ‖W x‖, E with i.i.d. entries U(−Δ_r/2, Δ_r/2) per row r.
 *
 * Choice (SPEC is silent on the estimator): W x is computed exactly (one GEMM
 * with all K probes), but E x is drawn from its distribution instead of
 * materialising E: (E x)_r = Σ_c E_rc x_c is a sum of `cols` independent
 * zero-mean terms with variance Δ_r²‖x‖²/12, i.e. Gaussian to within the CLT
 * for the widths of real layers. This needs `rows` random numbers per probe
 * instead of rows·cols; `noiseAmplificationExplicit` is the literal
 * definition, and the tests check that the two agree.
 */
export function noiseAmplification(w: Float32Array, rows: number, cols: number, steps: Float64Array, options: NoiseOptions): number {
  const K = options.probes;
  if (K < 1 || rows === 0 || cols === 0) return 0;
  const x = new Float32Array(cols * K); // [cols, K]
  for (let i = 0; i < x.length; i++) x[i] = options.rng.normal();
  const y = new Float32Array(rows * K); // [rows, K] = W X
  kernels().sgemm({ batch: 1, transA: false, transB: false, M: rows, N: K, K: cols, alpha: 1, a: w, lda: cols, strideA: 0, b: x, ldb: K, strideB: 0, beta: 0, c: y, ldc: K, strideC: 0 });
  const xNorm2 = new Float64Array(K);
  for (let c = 0; c < cols; c++) for (let k = 0; k < K; k++) xNorm2[k]! += x[c * K + k]! ** 2;
  let total = 0;
  let counted = 0;
  for (let k = 0; k < K; k++) {
    let wx2 = 0;
    let ex2 = 0;
    const sd = Math.sqrt(xNorm2[k]! / 12);
    for (let r = 0; r < rows; r++) {
      wx2 += y[r * K + k]! ** 2;
      const e = steps[r]! * sd * options.rng.normal();
      ex2 += e * e;
    }
    if (wx2 > 0) {
      total += Math.sqrt(ex2 / wx2);
      counted++;
    }
  }
  return counted > 0 ? total / counted : 0;
}

/** The literal SPEC definition with an explicit E per probe (slow; the test oracle). */
export function noiseAmplificationExplicit(w: Float32Array, rows: number, cols: number, steps: Float64Array, options: NoiseOptions): number {
  let total = 0;
  let counted = 0;
  const x = new Float64Array(cols);
  for (let k = 0; k < options.probes; k++) {
    for (let c = 0; c < cols; c++) x[c] = options.rng.normal();
    let wx2 = 0;
    let ex2 = 0;
    for (let r = 0; r < rows; r++) {
      let wx = 0;
      let ex = 0;
      for (let c = 0; c < cols; c++) {
        wx += w[r * cols + c]! * x[c]!;
        ex += (options.rng.uniform() - 0.5) * steps[r]! * x[c]!;
      }
      wx2 += wx * wx;
      ex2 += ex * ex;
    }
    if (wx2 > 0) {
      total += Math.sqrt(ex2 / wx2);
      counted++;
    }
  }
  return counted > 0 ? total / counted : 0;
}

const clip01 = (v: number): number => (v > 1 ? 1 : v > 0 ? v : 0);

export interface ScoreReferences {
  noiseRef: number;
  errorRef: number;
}

/** The default scores of SPEC section 1's table. */
export function metricScores(raw: { kurtosis: number; spectral_concentration: number; noise_amplification: number; reconstruction_error: number }, refs: ScoreReferences): MetricScores {
  return {
    kurtosis: clip01(raw.kurtosis / 10),
    spectral_concentration: clip01((raw.spectral_concentration - 0.1) / 0.8),
    noise_amplification: clip01(raw.noise_amplification / refs.noiseRef),
    reconstruction_error: clip01(raw.reconstruction_error / refs.errorRef),
  };
}

/** S = Σ_j α_j s_j with the weights normalised to sum 1 (so S ∈ [0, 1]). */
export function compositeScore(scores: MetricScores, weights: MetricScores): number {
  const keys = ['kurtosis', 'spectral_concentration', 'noise_amplification', 'reconstruction_error'] as const;
  let sumW = 0;
  let s = 0;
  for (const key of keys) {
    sumW += weights[key];
    s += weights[key] * scores[key];
  }
  return sumW > 0 ? s / sumW : 0;
}
