/**
 * Targeted quantization-noise injection (docs/algorithms.md §5 TQNI; docs/algorithms.md §6 TDNI applies
 * the same noise to the student layers aligned with the teacher's most
 * sensitive ones, at the deployment bit-width).
 *
 * In training forwards, each targeted weight is used as W + E with E_rc i.i.d.
 * U(−Δ_r/2, Δ_r/2), Δ_r = (max_r − min_r)/(2^b − 1) the b-bit asymmetric step
 * of row r (the per-output-channel grid of docs/algorithms.md §2, the same Δ_r as the SWAN
 * noise metric). The gradient is straight-through: ∂(W + E)/∂W = I, E is
 * treated as a constant (its dependence on the row extremes is ignored).
 */
import { QkdError, fmtShape } from '../errors.js';
import type { Embedding, Linear, WeightTransform } from '../nn/layers.js';
import { rowSteps } from '../swan/metrics.js';
import { Rng } from '../tensor/random.js';
import { gradEnabled, passGrad, record } from '../tensor/tape.js';
import { Tensor } from '../tensor/tensor.js';

/** 2^-32: maps a uint32 to [0, 1). */
const UINT32_SCALE = 2.3283064365386963e-10;

/**
 * W + U(−Δ_r/2, Δ_r/2) per row r of w viewed as [shape[0], rest], with a
 * straight-through gradient. The draws come from a local xorshift128 seeded
 * with 4 words of `rng` (so rng advances by exactly 4 draws per call, and the
 * loop makes no calls); one uint32 per entry, offset by half a draw step so E
 * is symmetric about 0 and strictly inside (−Δ_r/2, Δ_r/2).
 */
export function uniformStepNoise(w: Tensor, bits: number, rng: Rng): Tensor {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) throw new QkdError('ARGUMENT', `uniformStepNoise: bits = ${bits}`, { field: 'bits', hint: 'an integer from 1 to 16' });
  if (w.rank < 1) throw new QkdError('SHAPE', `uniformStepNoise: needs at least 1 dim, got ${fmtShape(w.shape)}`);
  const rows = w.rank === 1 ? 1 : w.shape[0]!;
  const cols = rows === 0 ? 0 : w.size / rows;
  const steps = rowSteps(w.data, rows, cols, bits);
  const out = new Tensor(w.shape);
  const x = w.data;
  const y = out.data;
  let s0 = rng.nextUint32() | 0;
  let s1 = rng.nextUint32() | 0;
  let s2 = rng.nextUint32() | 0;
  let s3 = rng.nextUint32() | 1; // never the all-zero state
  for (let r = 0; r < rows; r++) {
    const step = steps[r]!;
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const t = s0 ^ (s0 << 11);
      s0 = s1;
      s1 = s2;
      s2 = s3;
      s3 = s3 ^ (s3 >>> 19) ^ t ^ (t >>> 8);
      const unit = ((s3 >>> 0) + 0.5) * UINT32_SCALE - 0.5; // in (−1/2, 1/2)
      y[base + c] = x[base + c]! + unit * step;
    }
  }
  return record(out, 'uniformStepNoise', [w], (dy) => passGrad(dy, w));
}

export interface NoiseControllerOptions {
  /** Bit-width whose step Δ sets the noise amplitude (the deployment target, default 4). */
  bits?: number;
  /** The generator of every noise draw (e.g. the recipe's, checkpointed with it). */
  rng?: Rng;
  /** Seed of a generator of the controller's own, when no rng is given (default 0). */
  seed?: number;
}

type NoisyModule = Linear | Embedding;

interface Attachment {
  name: string;
  module: NoisyModule;
  /** The transform the module had before (kept and composed), or null. */
  previous: WeightTransform | null;
  /** The transform installed by this controller. */
  installed: WeightTransform;
}

/**
 * Attaches targeted noise to Linear / Embedding modules through their
 * weightTransform.
 *
 * Choices:
 *  - A module that already has a transform (e.g. QAT fake quantization) keeps
 *    it: the controller composes, noise(previous(W)), and detach() puts the
 *    previous transform back. Attach the noise controller last
 *    (FakeQuantController refuses modules that already have a transform).
 *  - Noise is drawn only when `enabled` and gradients are being recorded:
 *    forwards under noGrad (validation, evaluation, teacher passes) see the
 *    clean weights and do not advance the generator, so a run's noise stream
 *    does not depend on how often it is evaluated.
 *  - Modules are targeted by their module name (Module.name, e.g.
 *    "model.layers.3.mlp.down_proj"); each forward of a targeted module draws
 *    fresh noise (a tied embedding / lm_head pair is two modules).
 */
export class NoiseController {
  /** Master switch (the trainer turns it off outside the noise phase). */
  enabled = true;
  readonly bits: number;
  /** The generator of every noise draw (options.rng, or an own one: checkpoint it with rng.getState()). */
  readonly rng: Rng;
  private targets = new Set<string>();
  private attachments: Attachment[] = [];
  private readonly names = new Set<string>();

  constructor(modules: Iterable<NoisyModule>, options: NoiseControllerOptions = {}) {
    this.bits = options.bits ?? 4;
    if (!Number.isInteger(this.bits) || this.bits < 1 || this.bits > 16) {
      throw new QkdError('CONFIG', `noise bits = ${this.bits}`, { field: 'bits', hint: 'an integer from 1 to 16' });
    }
    this.rng = options.rng ?? new Rng(options.seed ?? 0);
    const list = [...modules];
    const seen = new Set<string>();
    for (const m of list) {
      if (seen.has(m.name)) throw new QkdError('ARGUMENT', `NoiseController: module '${m.name}' is listed twice`, { field: m.name, hint: 'modules with distinct names' });
      seen.add(m.name);
    }
    for (const module of list) {
      const name = module.name;
      const previous = module.weightTransform;
      const installed: WeightTransform = (w, m) => {
        const base = previous === null ? w : previous(w, m);
        return this.active(name) ? uniformStepNoise(base, this.bits, this.rng) : base;
      };
      module.weightTransform = installed;
      this.attachments.push({ name, module, previous, installed });
      this.names.add(name);
    }
  }

  /** True when the module registered under `name` gets noise in the current forward. */
  private active(name: string): boolean {
    return this.enabled && gradEnabled() && this.targets.has(name);
  }

  /** The names of the modules the controller is attached to. */
  attachedNames(): Set<string> {
    return new Set(this.names);
  }

  /** Chooses the noisy modules by module name (re-chosen at every re-profile); unknown names are an error. */
  setTargets(names: ReadonlySet<string>): void {
    for (const n of names) {
      if (!this.names.has(n)) throw new QkdError('ARGUMENT', `NoiseController.setTargets: no attached module named '${n}'`, { field: n, hint: `one of the ${this.names.size} attached names` });
    }
    this.targets = new Set(names);
  }

  /** The current targets. */
  getTargets(): Set<string> {
    return new Set(this.targets);
  }

  /**
   * Restores every module's previous transform. Fails (changing nothing) if
   * some module's transform was replaced since attaching: detach in the
   * reverse order of attaching.
   */
  detach(): void {
    const replaced = this.attachments.find((a) => a.module.weightTransform !== a.installed);
    if (replaced !== undefined) {
      throw new QkdError('STATE', `NoiseController.detach: the weight transform of '${replaced.module.name}' was replaced after the noise was attached`, { field: replaced.name, hint: 'detach controllers in the reverse order of attaching' });
    }
    for (const a of this.attachments) a.module.weightTransform = a.previous;
    this.attachments = [];
    this.names.clear();
    this.targets.clear();
  }
}

/**
 * The top `fraction` of names by score (highest first; equal scores in name
 * order), Math.round(fraction·n) of them but at least one when scores is
 * non-empty and fraction > 0.
 */
export function topFraction(scores: ReadonlyMap<string, number>, fraction = 0.2): Set<string> {
  if (!(fraction >= 0 && fraction <= 1)) throw new QkdError('ARGUMENT', `topFraction: fraction = ${fraction}`, { field: 'fraction', hint: 'a number in [0, 1]' });
  for (const [name, s] of scores) {
    if (Number.isNaN(s)) throw new QkdError('ARGUMENT', `topFraction: score of '${name}' is NaN`, { field: name, hint: 'a number' });
  }
  if (scores.size === 0 || fraction === 0) return new Set();
  const count = Math.max(1, Math.round(fraction * scores.size));
  const ranked = [...scores.entries()].sort(([na, a], [nb, b]) => b - a || (na < nb ? -1 : na > nb ? 1 : 0));
  return new Set(ranked.slice(0, count).map(([name]) => name));
}
