/**
 * AdamW (decoupled weight decay, Loshchilov & Hutter) over a parameter arena,
 * and global gradient-norm clipping.
 *
 *   m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
 *   w ← w − lr·wd·w − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps)
 *
 * Weight decay applies to matrices (rank ≥ 2) only by default; norms and
 * biases are not decayed. Defaults follow docs/algorithms.md §4 (β = 0.9, 0.95,
 * weight decay 0.01).
 */
import { QkdError } from '../errors.js';
import type { ArenaEntry, ParameterArena } from '../tensor/arena.js';
import { allocFloat, type FloatArray } from '../tensor/tensor.js';
import { kernels } from '../tensor/backend.js';

export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Which parameters get weight decay (default: rank ≥ 2). */
  decays?: (entry: ArenaEntry) => boolean;
  /**
   * false: no float32 moment buffers are allocated (m and v are empty); the
   * caller keeps the moments itself (DBWA stores them packed) and updates
   * tensor by tensor with `beginUpdate` + `updateSlice`. `update` then throws.
   */
  moments?: boolean;
}

export interface AdamWState {
  step: number;
  m: FloatArray;
  v: FloatArray;
}

export class AdamW {
  readonly arena: ParameterArena;
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Number of updates taken so far. */
  step = 0;
  readonly m: FloatArray;
  readonly v: FloatArray;
  private readonly decayRanges: { offset: number; size: number; decay: boolean }[];
  private readonly decaySet: ReadonlySet<string>;

  constructor(arena: ParameterArena, options: AdamWOptions = {}) {
    this.arena = arena;
    this.lr = options.lr ?? 1e-3;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.95;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    for (const [field, value, lo, hi] of [
      ['lr', this.lr, 0, Infinity],
      ['beta1', this.beta1, 0, 1],
      ['beta2', this.beta2, 0, 1],
      ['eps', this.eps, 0, Infinity],
      ['weightDecay', this.weightDecay, 0, Infinity],
    ] as const) {
      if (!(value >= lo && value < hi) || (field === 'eps' && value === 0)) {
        throw new QkdError('ARGUMENT', `AdamW: ${field} = ${value} is out of range`, { field, hint: `${lo} ≤ ${field} < ${hi}` });
      }
    }
    const decays = options.decays ?? ((e: ArenaEntry) => e.shape.length >= 2);
    this.decaySet = new Set(arena.entries.filter(decays).map((e) => e.name));
    // Adjacent parameters with the same decay flag form one range (fewer kernel calls).
    this.decayRanges = [];
    for (const e of arena.entries) {
      const decay = decays(e);
      const last = this.decayRanges[this.decayRanges.length - 1];
      if (last && last.decay === decay && last.offset + last.size === e.offset) last.size += e.size;
      else this.decayRanges.push({ offset: e.offset, size: e.size, decay });
    }
    const own = options.moments ?? true;
    this.m = allocFloat(own ? arena.size : 0);
    this.v = allocFloat(own ? arena.size : 0);
  }

  /** True when this optimiser holds float32 moments (the `moments` option). */
  get ownsMoments(): boolean {
    return this.m.length === this.arena.size;
  }

  /** One update from the arena's gradients (the caller zeroes them after). */
  update(lr = this.lr): void {
    if (!this.ownsMoments && this.arena.size > 0) {
      throw new QkdError('STATE', 'AdamW.update: this optimiser was built with moments: false', { hint: 'update tensor by tensor with beginUpdate and updateSlice' });
    }
    const { c1, c2 } = this.beginUpdate();
    const { data: w, grad: g } = this.arena;
    for (const r of this.decayRanges) {
      const end = r.offset + r.size;
      this.applyUpdate(w.subarray(r.offset, end), g.subarray(r.offset, end), this.m.subarray(r.offset, end), this.v.subarray(r.offset, end), lr, r.decay, c1, c2);
    }
  }

  /**
   * Starts an update taken tensor by tensor: advances the step and returns
   * the bias corrections 1/(1 − β1^t), 1/(1 − β2^t) for `updateSlice`.
   */
  beginUpdate(): { c1: number; c2: number } {
    this.step++;
    return { c1: 1 / (1 - this.beta1 ** this.step), c2: 1 / (1 - this.beta2 ** this.step) };
  }

  /**
   * Updates one parameter's weights w in place from its gradient g and its
   * moments m, v (all float32, same length; m and v are updated in place),
   * with the arena's decay rule for that parameter. The same arithmetic as
   * `update`, so a tensor-by-tensor pass equals one whole-arena update.
   */
  updateSlice(entry: ArenaEntry, w: FloatArray, g: FloatArray, m: FloatArray, v: FloatArray, lr: number, c1: number, c2: number): void {
    const n = entry.size;
    if (w.length !== n || g.length !== n || m.length !== n || v.length !== n) {
      throw new QkdError('SHAPE', `AdamW.updateSlice: '${entry.name}' has ${n} values, got w ${w.length}, g ${g.length}, m ${m.length}, v ${v.length}`, { field: entry.name });
    }
    this.applyUpdate(w, g, m, v, lr, this.decaySet.has(entry.name), c1, c2);
  }

  private applyUpdate(w: FloatArray, g: FloatArray, m: FloatArray, v: FloatArray, lr: number, decay: boolean, c1: number, c2: number): void {
    const shrink = decay ? 1 - lr * this.weightDecay : 1;
    kernels().adamw(w, g, m, v, w.length, lr, this.beta1, this.beta2, this.eps, shrink, c1, c2);
  }

  getState(): AdamWState {
    return { step: this.step, m: this.m, v: this.v };
  }

  setState(state: AdamWState): void {
    if (state.m.length !== this.m.length || state.v.length !== this.v.length) {
      throw new QkdError('SHAPE', `AdamW.setState: state has ${state.m.length} moments, the arena has ${this.m.length} parameters`);
    }
    this.step = state.step;
    this.m.set(state.m);
    this.v.set(state.v);
  }
}

/** Global L2 norm of a gradient buffer (float64 accumulation). */
export function gradNorm(grad: FloatArray): number {
  return Math.sqrt(kernels().sumSquares(grad, grad.length));
}

/**
 * Scales the gradients so their global norm is at most maxNorm. Returns the
 * norm before clipping (as torch.nn.utils.clip_grad_norm_).
 */
export function clipGradNorm(grad: FloatArray, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new QkdError('ARGUMENT', `clipGradNorm: maxNorm must be > 0, got ${maxNorm}`, { field: 'maxNorm' });
  const norm = gradNorm(grad);
  if (norm > maxNorm) {
    kernels().scaleInPlace(grad, grad.length, maxNorm / (norm + 1e-6));
  }
  return norm;
}
