/**
 * The four data-free sensitivity metrics of docs/algorithms.md §1, on a weight
 * viewed as [rows, cols] = [out, in], plus their scores and the composite.
 * Reductions that decide a metric accumulate in float64.
 */
import { kernels, withBackend } from '../tensor/backend.js';
import type { FloatArray } from '../tensor/tensor.js';
import { bf16BitsToF32 } from '../tensor/dtype.js';
import { Rng } from '../tensor/random.js';
import type { ProbeProducts, WeightData } from './weight-data.js';
import type { MetricScores } from './types.js';

export type { Bf16Weight, WeightData } from './weight-data.js';

/** The result of one pass of the weightStats kernel over W [rows, cols]. */
interface WeightPass {
  n: number;
  /** Σd, Σd², Σd³, Σd⁴ (d = w − shift), Σw², Σ(Q_b(w) − w)². */
  totals: Float64Array;
  rowMin: Float32Array;
  rowMax: Float32Array;
}

/** Entries sampled (evenly spaced) to place the shift of the power sums near the mean. */
const SHIFT_SAMPLES = 4096;

function sampleMean(w: WeightData, n: number): number {
  const step = Math.max(1, Math.floor(n / SHIFT_SAMPLES));
  let sum = 0;
  let count = 0;
  for (let i = 0; i < n; i += step, count++) sum += w instanceof Float32Array ? w[i]! : bf16BitsToF32(w.bf16[i]!);
  return count > 0 && Number.isFinite(sum) ? sum / count : 0;
}

/**
 * One read of W [rows, cols] by the backend's weightStats kernel (bf16 read
 * as stored; `bits` 0 skips the quantization error). The power sums are of
 * d = w − s with s the mean of an evenly spaced sample, so the central
 * moments follow in float64 without the cancellation of raw moments (s is a
 * small fraction of σ from the mean) and W is read once instead of twice.
 */
function weightPass(w: WeightData, rows: number, cols: number, bits: number): WeightPass {
  const n = rows * cols;
  const rowMin = new Float32Array(rows);
  const rowMax = new Float32Array(rows);
  const totals = new Float64Array(6);
  if (n > 0) {
    const shift = sampleMean(w, n);
    if (w instanceof Float32Array) kernels().weightStats(w, rows, cols, bits, shift, rowMin, rowMax, totals);
    else kernels().weightStatsBf16(w.bf16, rows, cols, bits, shift, rowMin, rowMax, totals);
  }
  return { n, totals, rowMin, rowMax };
}

/**
 * A flat tensor of n entries as rows × cols for the kernel, whose threads
 * take whole rows: rows of a few thousand entries when n allows.
 */
function asRows(n: number): [number, number] {
  for (const cols of [4096, 2048, 1024, 512]) if (n % cols === 0 && n >= 4 * cols) return [n / cols, cols];
  return [n > 0 ? 1 : 0, n];
}

function kurtosisOf(pass: WeightPass): number {
  const { n, totals } = pass;
  if (n === 0) return 0;
  const mu = totals[0]! / n;
  const m2 = totals[1]! / n - mu * mu;
  const m4 = totals[3]! / n - 4 * mu * (totals[2]! / n) + 6 * mu * mu * (totals[1]! / n) - 3 * mu ** 4;
  return m2 > 0 ? m4 / (m2 * m2) - 3 : 0;
}

function stepsOf(pass: WeightPass, cols: number, bits: number): Float64Array {
  const levels = 2 ** bits - 1;
  const steps = new Float64Array(pass.rowMin.length);
  if (cols > 0) for (let r = 0; r < steps.length; r++) steps[r] = (pass.rowMax[r]! - pass.rowMin[r]!) / levels;
  return steps;
}

/** Sum of squares in float64. */
export function frobeniusSquared(w: FloatArray): number {
  if (!(w instanceof Float32Array)) return plainMoments(w).squares;
  const [rows, cols] = asRows(w.length);
  return weightPass(w, rows, cols, 0).totals[4]!;
}

/**
 * Excess kurtosis κ = mean((w−μ)⁴)/σ⁴ − 3 over all entries (population
 * moments in float64, from power sums about a point near the mean so a
 * large mean does not cancel). A constant tensor has κ = 0 by convention
 * (no tails to speak of).
 */
export function excessKurtosis(w: FloatArray): number {
  if (!(w instanceof Float32Array)) return plainMoments(w).kurtosis;
  const [rows, cols] = asRows(w.length);
  return kurtosisOf(weightPass(w, rows, cols, 0));
}

/** Per-row b-bit asymmetric step Δ_r = (max_r − min_r)/(2^b − 1). */
export function rowSteps(w: FloatArray, rows: number, cols: number, bits: number): Float64Array {
  if (!(w instanceof Float32Array)) return plainRowSteps(w, rows, cols, bits);
  return stepsOf(weightPass(w, rows, cols, 0), cols, bits);
}

/**
 * Reconstruction error proxy e = ‖Q_b(W) − W‖_F / ‖W‖_F with Q_b the b-bit
 * per-output-channel asymmetric round-to-nearest quantizer (the arithmetic
 * of the backend's fake-quant kernel, docs/algorithms.md §2, inside the
 * weightStats kernel: no dequantized copy; `scratch` is no longer used).
 */
export function reconstructionError(w: FloatArray, rows: number, cols: number, bits: number, frobenius2: number, scratch?: Float32Array): number {
  void scratch;
  if (!(frobenius2 > 0)) return 0;
  if (!(w instanceof Float32Array)) return plainReconstructionError(w, rows, cols, bits, frobenius2);
  return Math.sqrt(weightPass(w, rows, cols, bits).totals[5]! / frobenius2);
}

// Float64Array weights (the gradient checks' float64 mode, typed as FloatArray)
// take these plain loops: the kernels read float32 or bf16.

function plainMoments(w: FloatArray): { kurtosis: number; squares: number } {
  const n = w.length;
  let sum = 0;
  let squares = 0;
  for (let i = 0; i < n; i++) {
    sum += w[i]!;
    squares += w[i]! * w[i]!;
  }
  const mean = n > 0 ? sum / n : 0;
  let m2 = 0;
  let m4 = 0;
  for (let i = 0; i < n; i++) {
    const d2 = (w[i]! - mean) ** 2;
    m2 += d2 / n;
    m4 += (d2 * d2) / n;
  }
  return { kurtosis: m2 > 0 ? m4 / (m2 * m2) - 3 : 0, squares };
}

function plainRowSteps(w: FloatArray, rows: number, cols: number, bits: number): Float64Array {
  const steps = new Float64Array(rows);
  const levels = 2 ** bits - 1;
  for (let r = 0; r < rows; r++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let c = 0; c < cols; c++) {
      const v = w[r * cols + c]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    steps[r] = cols > 0 ? (hi - lo) / levels : 0;
  }
  return steps;
}

function plainReconstructionError(w: FloatArray, rows: number, cols: number, bits: number, frobenius2: number): number {
  const out = w.slice(0, rows * cols); // same element type as w
  withBackend('reference', () => kernels().fakeQuantForward(w, out, new Uint8Array(0), rows, cols, bits, false, 1, cols, 1));
  let err = 0;
  for (let i = 0; i < out.length; i++) err += (out[i]! - w[i]!) ** 2;
  return Math.sqrt(err / frobenius2);
}

/** The memory-bound metrics of one weight, from a single read (weightStatistics). */
export interface WeightStatistics {
  /** Excess kurtosis over all entries (0 for a constant tensor). */
  kurtosis: number;
  /** ‖W‖_F² in float64. */
  frobenius2: number;
  /** Per-row b-bit steps Δ_r = (max_r − min_r)/(2^b − 1) (rowSteps); zeros when bits is 0. */
  steps: Float64Array;
  /** ‖Q_b(W) − W‖_F / ‖W‖_F, per-row asymmetric RTN (reconstructionError); 0 when W = 0 or bits is 0. */
  reconstructionError: number;
}

/**
 * Kurtosis, ‖W‖_F², row steps and RTN error of W [rows, cols] in one pass
 * over the weight (float32, or bf16 as stored). `bits` 0 skips the
 * quantization error: use it for 1-D tensors, which only need the kurtosis.
 */
export function weightStatistics(w: WeightData, rows: number, cols: number, bits: number): WeightStatistics {
  const [passRows, passCols] = bits === 0 ? asRows(rows * cols) : [rows, cols];
  const pass = weightPass(w, passRows, passCols, bits);
  const frobenius2 = pass.totals[4]!;
  return {
    kurtosis: kurtosisOf(pass),
    frobenius2,
    steps: bits > 0 ? stepsOf(pass, cols, bits) : new Float64Array(rows),
    reconstructionError: bits > 0 && frobenius2 > 0 ? Math.sqrt(pass.totals[5]! / frobenius2) : 0,
  };
}

/**
 * The noise amplification estimate (noiseAmplification) from probe products
 * computed elsewhere: ‖W x_k‖² and ‖x_k‖² of K probe directions, here taken
 * from the first pass of the randomised SVD (spectrum.ts), so the noise
 * metric costs no pass over W of its own. (E x)_r is drawn from its
 * distribution as in noiseAmplification; the ratio ‖E x‖/‖W x‖ does not
 * depend on the length of x, so unit directions serve as Gaussian probes.
 */
export function noiseFromProbes(probes: ProbeProducts, steps: Float64Array, rng: Rng): number {
  let total = 0;
  let counted = 0;
  // The z_r of every probe in one draw, probe after probe (the order of drawing them one by one).
  const z = rng.fillNormal(new Float64Array(steps.length * probes.wx2.length), kernels().normalFill);
  for (let k = 0; k < probes.wx2.length; k++) {
    const wx2 = probes.wx2[k]!;
    const ex2 = sampledNoiseEnergy(steps, probes.x2[k]!, z.subarray(k * steps.length, (k + 1) * steps.length));
    if (wx2 > 0) {
      total += Math.sqrt(ex2 / wx2);
      counted++;
    }
  }
  return counted > 0 ? total / counted : 0;
}

/** ‖E x‖² for one probe: Σ_r (Δ_r·‖x‖/√12·z_r)² with z_r standard normal (the CLT form of (E x)_r). */
function sampledNoiseEnergy(steps: Float64Array, x2: number, z: Float64Array): number {
  const sd = Math.sqrt(x2 / 12);
  let ex2 = 0;
  for (let r = 0; r < steps.length; r++) {
    const e = steps[r]! * sd * z[r]!;
    ex2 += e * e;
  }
  return ex2;
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
 * Choice (the method leaves the estimator open): W x is computed exactly (one GEMM
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
    for (let r = 0; r < rows; r++) wx2 += y[r * K + k]! ** 2;
    const ex2 = sampledNoiseEnergy(steps, xNorm2[k]!, options.rng.fillNormal(new Float64Array(steps.length), kernels().normalFill));
    if (wx2 > 0) {
      total += Math.sqrt(ex2 / wx2);
      counted++;
    }
  }
  return counted > 0 ? total / counted : 0;
}

/** The literal definition of docs/algorithms.md §1 with an explicit E per probe (slow; the test oracle). */
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

/** The default scores of docs/algorithms.md §1's table. */
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
