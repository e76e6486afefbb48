/**
 * The two weight regularisers of sensitivity-aware training (docs/algorithms.md §5,
 * reused by SAKD's SGR in section 6):
 *
 *  - KDS, kurtosis ceiling: L_kurt = Σ_l c_l · max(0, κ_l − κ_max)², κ_l the
 *    excess kurtosis of layer l (population moments over all N entries).
 *  - SC, spectral conditioning: L_spec = Σ_l σ_max(W_l) / ‖W_l‖_F, σ_max from
 *    power iteration whose vectors persist across steps (one iteration per
 *    step is enough once they have converged, since W moves slowly).
 *
 * Both are single custom ops with analytic backwards rather than compositions
 * of elementwise ops: the moments are accumulated in float64 (κ of a
 * near-Gaussian layer is a small difference of large terms), and a layer
 * under the ceiling costs one forward pass and no backward work at all.
 *
 * Kurtosis gradient, with d_i = w_i − μ, m_k = mean(d^k), σ² = m2:
 *   ∂m2/∂w_i = (2/N)·d_i                 (Σ d_j = 0 kills the mean term)
 *   ∂m4/∂w_i = (4/N)·(d_i³ − m3)
 *   ∂κ/∂w_i  = ∂m4/m2² − 2·m4/m2³·∂m2
 *            = 4/(N σ⁴) · [d_i³ − m3 − (m4/σ²)·d_i]
 * A constant layer (σ = 0) has κ = 0 and no gradient, as in swan/metrics.ts.
 */
import { QkdError, fmtShape } from '../errors.js';
import { Rng } from '../tensor/random.js';
import { record } from '../tensor/tape.js';
import { Tensor, type FloatArray } from '../tensor/tensor.js';

// ---- kurtosis ----------------------------------------------------------------

/** Central moments of one tensor, in float64. */
interface Moments {
  n: number;
  mean: number;
  m2: number;
  m3: number;
  m4: number;
}

/** Two-pass central moments (the mean first, so a large offset does not cancel). */
function centralMoments(w: FloatArray): Moments {
  const n = w.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i]!;
  const mean = n > 0 ? sum / n : 0;
  let m2 = 0;
  let m3 = 0;
  let m4 = 0;
  for (let i = 0; i < n; i++) {
    const d = w[i]! - mean;
    const d2 = d * d;
    m2 += d2;
    m3 += d2 * d;
    m4 += d2 * d2;
  }
  return n > 0 ? { n, mean, m2: m2 / n, m3: m3 / n, m4: m4 / n } : { n, mean, m2: 0, m3: 0, m4: 0 };
}

function kurtosisFromMoments(m: Moments): number {
  return m.m2 > 0 ? m.m4 / (m.m2 * m.m2) - 3 : 0;
}

/** dx_i += g · ∂κ/∂w_i (see the file comment). */
function addKurtosisGradient(w: FloatArray, m: Moments, g: number, dx: FloatArray): void {
  if (!(m.m2 > 0) || g === 0) return;
  const a = (4 * g) / (m.n * m.m2 * m.m2);
  const b = m.m4 / m.m2;
  const { mean, m3 } = m;
  for (let i = 0; i < w.length; i++) {
    const d = w[i]! - mean;
    dx[i]! += a * (d * d * d - m3 - b * d);
  }
}

/** Differentiable excess kurtosis of all entries of `w` (a scalar graph tensor). */
export function kurtosisOf(w: Tensor): Tensor {
  const moments = centralMoments(w.data);
  const out = new Tensor([]);
  out.data[0] = kurtosisFromMoments(moments);
  return record(out, 'kurtosis', [w], (dy) => addKurtosisGradient(w.data, moments, dy[0]!, w.ensureGrad()));
}

export interface KurtosisPenaltyOptions {
  /**
   * Per-layer coefficients c_l (default 1 each), e.g. raised by SAKD's
   * optimiser feedback for a layer whose κ keeps rising while penalised.
   */
  coefficients?: readonly number[];
}

export interface KurtosisPenaltyResult {
  /** L_kurt as a scalar graph tensor. */
  loss: Tensor;
  /** κ_l of every layer (for logging), in input order. */
  kappas: Float64Array;
}

/**
 * L_kurt = Σ_l c_l · max(0, κ_l − κ_max)² and the per-layer κ. Layers at or
 * under the ceiling get no gradient: their gradient buffers are not touched.
 */
export function kurtosisPenaltyWithStats(weights: readonly Tensor[], kappaMax: number, options: KurtosisPenaltyOptions = {}): KurtosisPenaltyResult {
  if (!Number.isFinite(kappaMax)) throw new QkdError('ARGUMENT', `kurtosisPenalty: kappaMax must be finite, got ${kappaMax}`, { field: 'kappa_max', hint: 'a number, typically 1.5 to 2.5' });
  const coefficients = options.coefficients ?? weights.map(() => 1);
  if (coefficients.length !== weights.length) {
    throw new QkdError('ARGUMENT', `kurtosisPenalty: ${coefficients.length} coefficients for ${weights.length} weights`, { field: 'coefficients', hint: 'one coefficient per weight' });
  }
  coefficients.forEach((c, l) => {
    if (!(c >= 0 && Number.isFinite(c))) throw new QkdError('ARGUMENT', `kurtosisPenalty: coefficient ${l} is ${c}`, { field: 'coefficients', hint: 'finite and ≥ 0' });
  });
  const moments = weights.map((w) => centralMoments(w.data));
  const kappas = Float64Array.from(moments, kurtosisFromMoments);
  let total = 0;
  for (let l = 0; l < weights.length; l++) {
    const excess = Math.max(0, kappas[l]! - kappaMax);
    total += coefficients[l]! * excess * excess;
  }
  const out = new Tensor([]);
  out.data[0] = total;
  const loss = record(out, 'kurtosisPenalty', weights, (dy) => {
    for (let l = 0; l < weights.length; l++) {
      const w = weights[l]!;
      const excess = kappas[l]! - kappaMax;
      if (!(excess > 0) || !w.requiresGrad || coefficients[l] === 0) continue;
      addKurtosisGradient(w.data, moments[l]!, dy[0]! * 2 * coefficients[l]! * excess, w.ensureGrad());
    }
  });
  return { loss, kappas };
}

/** L_kurt = Σ_l max(0, κ_l − κ_max)² (docs/algorithms.md §5 KDS) as a scalar graph tensor. */
export function kurtosisPenalty(weights: readonly Tensor[], kappaMax: number, options: KurtosisPenaltyOptions = {}): Tensor {
  return kurtosisPenaltyWithStats(weights, kappaMax, options).loss;
}

// ---- spectral norm -----------------------------------------------------------

/** One weight's persistent power-iteration vectors (unit length). */
interface PowerVectors {
  rows: number;
  cols: number;
  /** [rows] left singular vector estimate. */
  u: Float64Array;
  /** [cols] right singular vector estimate. */
  v: Float64Array;
  /** The latest σ_max estimate. */
  sigma: number;
}

/** Checkpointable state of one weight's vectors (plain arrays, JSON-safe). */
export interface SpectralVectorState {
  name: string;
  rows: number;
  cols: number;
  u: number[];
  v: number[];
  sigma: number;
}

export interface SpectralTrackerState {
  seed: number;
  entries: SpectralVectorState[];
}

/** FNV-1a of a name, so each weight's initial vectors depend on its name and the seed only. */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function normalise(x: Float64Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  const norm = Math.sqrt(s);
  if (norm > 0) for (let i = 0; i < x.length; i++) x[i]! /= norm;
  return norm;
}

/** y = W v for W [rows, cols] (row dot products, float64 accumulation). */
function matVec(w: FloatArray, rows: number, cols: number, v: Float64Array, y: Float64Array): void {
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[base + c]! * v[c]!;
    y[r] = s;
  }
}

/** y = Wᵀ u for W [rows, cols] (row-wise axpy, contiguous reads). */
function matTVec(w: FloatArray, rows: number, cols: number, u: Float64Array, y: Float64Array): void {
  y.fill(0);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const ur = u[r]!;
    if (ur === 0) continue;
    for (let c = 0; c < cols; c++) y[c]! += w[base + c]! * ur;
  }
}

/**
 * Power-iteration vectors per named weight. Initial vectors are Gaussian,
 * seeded by (seed, name), so they do not depend on the order weights are
 * first seen. A weight whose shape changes (e.g. after pruning) starts over.
 */
export class SpectralNormTracker {
  readonly seed: number;
  private readonly vectors = new Map<string, PowerVectors>();

  constructor(seed = 0) {
    this.seed = seed >>> 0;
  }

  private vectorsFor(name: string, rows: number, cols: number): PowerVectors {
    const known = this.vectors.get(name);
    if (known !== undefined && known.rows === rows && known.cols === cols) return known;
    const rng = new Rng((nameHash(name) ^ Math.imul(this.seed, 0x9e3779b1)) >>> 0);
    const u = Float64Array.from({ length: rows }, () => rng.normal());
    const v = Float64Array.from({ length: cols }, () => rng.normal());
    normalise(u);
    normalise(v);
    const fresh: PowerVectors = { rows, cols, u, v, sigma: 0 };
    this.vectors.set(name, fresh);
    return fresh;
  }

  /**
   * Runs `iterations` power steps (v ← Wᵀu/‖·‖, u ← Wv/‖·‖) on w viewed as
   * [rows, cols] and returns σ_max ≈ ‖W v‖ = uᵀ W v.
   */
  step(name: string, w: FloatArray, rows: number, cols: number, iterations = 1): number {
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1 || rows * cols !== w.length) {
      throw new QkdError('SHAPE', `SpectralNormTracker.step: '${name}' has ${w.length} values, not ${rows}×${cols}`, { field: name });
    }
    if (!Number.isInteger(iterations) || iterations < 1) {
      throw new QkdError('ARGUMENT', `SpectralNormTracker.step: iterations = ${iterations}`, { field: 'iterations', hint: 'an integer ≥ 1' });
    }
    const p = this.vectorsFor(name, rows, cols);
    const nextV = new Float64Array(cols);
    const nextU = new Float64Array(rows);
    for (let it = 0; it < iterations; it++) {
      matTVec(w, rows, cols, p.u, nextV);
      if (normalise(nextV) > 0) p.v.set(nextV); // else W = 0 or u ⟂ range(W): keep v
      matVec(w, rows, cols, p.v, nextU);
      p.sigma = normalise(nextU);
      if (p.sigma > 0) p.u.set(nextU);
    }
    return p.sigma;
  }

  /** The current vectors of a weight (live views; do not modify), or undefined. */
  vectorsOf(name: string): { u: Float64Array; v: Float64Array; sigma: number } | undefined {
    const p = this.vectors.get(name);
    return p === undefined ? undefined : { u: p.u, v: p.v, sigma: p.sigma };
  }

  /** Every weight's vectors as plain arrays (for checkpoints). */
  getState(): SpectralTrackerState {
    const entries = [...this.vectors.entries()].map(([name, p]) => ({ name, rows: p.rows, cols: p.cols, u: Array.from(p.u), v: Array.from(p.v), sigma: p.sigma }));
    return { seed: this.seed, entries };
  }

  /**
   * Restores vectors saved by getState (replacing all current ones). Takes
   * `unknown` because the state comes back from a checkpoint's JSON; a
   * malformed state is an error and changes nothing.
   */
  setState(state: unknown): void {
    const entries = (state as { entries?: unknown } | null)?.entries;
    if (!Array.isArray(entries)) throw new QkdError('STATE', 'SpectralNormTracker.setState: no entries array', { field: 'spectral', hint: 'the object returned by getState()' });
    const restored = new Map<string, PowerVectors>();
    for (const raw of entries as unknown[]) {
      const e = raw as Partial<SpectralVectorState> | null;
      const name = typeof e?.name === 'string' ? e.name : undefined;
      const ok =
        name !== undefined && Number.isInteger(e!.rows) && Number.isInteger(e!.cols) && e!.rows! >= 1 && e!.cols! >= 1 &&
        isFiniteArray(e!.u, e!.rows!) && isFiniteArray(e!.v, e!.cols!) && Number.isFinite(e!.sigma);
      if (!ok) {
        throw new QkdError('STATE', `SpectralNormTracker.setState: entry '${String(name)}' is malformed`, { field: String(name), hint: 'name, rows, cols ≥ 1 and finite u [rows], v [cols], sigma' });
      }
      restored.set(name, { rows: e!.rows!, cols: e!.cols!, u: Float64Array.from(e!.u!), v: Float64Array.from(e!.v!), sigma: e!.sigma! });
    }
    this.vectors.clear();
    for (const [name, p] of restored) this.vectors.set(name, p);
  }
}

function isFiniteArray(x: unknown, length: number): x is number[] {
  return Array.isArray(x) && x.length === length && x.every((value) => typeof value === 'number' && Number.isFinite(value));
}

export interface SpectralEntry {
  /** Key of the weight's vectors in the tracker (the arena name). */
  name: string;
  /** [rows, cols, ...]: rows = shape[0], the rest flattened. */
  weight: Tensor;
}

export interface SpectralPenaltyOptions {
  /** Power steps per call before σ is read (default 1). */
  iterations?: number;
}

/**
 * L_spec = Σ_l σ_max(W_l) / ‖W_l‖_F (docs/algorithms.md §5 SC). Advances each weight's
 * power iteration, then uses σ = uᵀ W v with u, v held constant, so
 * ∂L/∂W = u vᵀ/‖W‖_F − σ W/‖W‖_F³ (exact at a converged singular pair).
 * An all-zero weight contributes 0.
 */
export function spectralPenalty(entries: readonly SpectralEntry[], tracker: SpectralNormTracker, options: SpectralPenaltyOptions = {}): Tensor {
  const iterations = options.iterations ?? 1;
  const terms = entries.map(({ name, weight }) => {
    if (weight.rank < 2) throw new QkdError('SHAPE', `spectralPenalty: '${name}' has shape ${fmtShape(weight.shape)}`, { field: name, hint: 'a matrix (rank ≥ 2)' });
    const rows = weight.shape[0]!;
    const cols = weight.size / rows;
    const sigma = tracker.step(name, weight.data, rows, cols, iterations);
    let norm2 = 0;
    for (let i = 0; i < weight.size; i++) norm2 += weight.data[i]! * weight.data[i]!;
    // Snapshot u, v: the backward must use this iterate even if the tracker moves on.
    const vectors = tracker.vectorsOf(name)!;
    return { weight, rows, cols, u: vectors.u.slice(), v: vectors.v.slice(), sigma, frobenius: Math.sqrt(norm2) };
  });
  let total = 0;
  for (const t of terms) if (t.frobenius > 0) total += t.sigma / t.frobenius;
  const out = new Tensor([]);
  out.data[0] = total;
  return record(out, 'spectralPenalty', entries.map((e) => e.weight), (dy) => {
    for (const t of terms) {
      if (!t.weight.requiresGrad || !(t.frobenius > 0)) continue;
      addSpectralGradient(t.weight.data, t.rows, t.cols, t.u, t.v, t.sigma, t.frobenius, dy[0]!, t.weight.ensureGrad());
    }
  });
}

/** dx += g · (u vᵀ/F − σ W/F³). */
function addSpectralGradient(w: FloatArray, rows: number, cols: number, u: Float64Array, v: Float64Array, sigma: number, frobenius: number, g: number, dx: FloatArray): void {
  const a = g / frobenius;
  const b = (g * sigma) / (frobenius * frobenius * frobenius);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const ur = a * u[r]!;
    for (let c = 0; c < cols; c++) dx[base + c]! += ur * v[c]! - b * w[base + c]!;
  }
}
