/**
 * Several teachers of one vocabulary as one teacher (docs/synth.md, "Several
 * teachers"). The ensemble's distribution at a position is the mixture
 *
 *   m(v) = Σ_i w_i · p_i(v),  p_i = softmax(z_i)   (τ = 1)
 *
 * with fixed weights w_i (mix `mean`), or with w_i ∝ w_i · max_v p_i(v) per
 * position (mix `confidence`: a teacher that is sure of the next token counts
 * more there). Its logits are log m, so every consumer of a teacher's logits
 * (live KD at τ, the top-k soft-target cache, validation KL, the entropy
 * report) reads the ensemble as it reads one teacher; KD at temperature τ
 * softens m as it softens one teacher's distribution. Mix `alternate` trains
 * each batch on one member drawn by the weights (`select`), and measures
 * validation KL against the mean mixture.
 *
 * The mixture is computed in float64 per position, as a log-sum-exp over the
 * members of log w_i + z_i(v) − logsumexp(z_i).
 */
import { QkdError } from '../errors.js';
import type { LlamaConfig } from '../models/llama-config.js';
import type { ForwardOptions } from '../models/llama.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tape.js';
import { Tensor } from '../tensor/tensor.js';

/** What KD reads of a teacher: its config and its logits. */
export interface TeacherModel {
  readonly config: LlamaConfig;
  forward(ids: Int32Array, B: number, T: number, options?: ForwardOptions): Tensor;
}

export type EnsembleMix = 'mean' | 'confidence' | 'alternate';

/**
 * log m for rows of member logits: `logits[i]` holds member i's rows × V
 * values; `weights` sum to 1. Float64 throughout; the result is float32.
 */
export function mixtureLogits(logits: readonly Float32Array[], rows: number, V: number, weights: readonly number[], mix: 'mean' | 'confidence'): Float32Array {
  const n = logits.length;
  if (n === 0 || weights.length !== n) throw new QkdError('SHAPE', `mixtureLogits: ${n} members and ${weights.length} weights`);
  for (const z of logits) if (z.length !== rows * V) throw new QkdError('SHAPE', `mixtureLogits: ${z.length} logits for ${rows} rows × ${V}`);
  const out = new Float32Array(rows * V);
  const lse = new Float64Array(n);
  const logW = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    // Each member's log-partition and (confidence) top probability.
    let wSum = 0;
    for (let i = 0; i < n; i++) {
      const z = logits[i]!;
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (z[o + v]! > max) max = z[o + v]!;
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(z[o + v]! - max);
      lse[i] = max + Math.log(s);
      // max_v p_i(v) = exp(max − lse).
      const w = mix === 'confidence' ? weights[i]! * Math.exp(max - lse[i]!) : weights[i]!;
      logW[i] = w;
      wSum += w;
    }
    for (let i = 0; i < n; i++) logW[i] = Math.log(logW[i]! / wSum);
    for (let v = 0; v < V; v++) {
      let max = -Infinity;
      for (let i = 0; i < n; i++) {
        const t = logW[i]! + logits[i]![o + v]! - lse[i]!;
        if (t > max) max = t;
      }
      let s = 0;
      for (let i = 0; i < n; i++) s += Math.exp(logW[i]! + logits[i]![o + v]! - lse[i]! - max);
      out[o + v] = max + Math.log(s);
    }
  }
  return out;
}

/** Weights normalised to sum 1 (default: equal), checked against the member count. */
export function ensembleWeights(n: number, given: readonly number[] | null): number[] {
  if (given === null) return Array.from({ length: n }, () => 1 / n);
  if (given.length !== n) {
    throw new QkdError('CONFIG', `${given.length} teacher weights for ${n} teachers`, { field: 'distillation.teachers.weights', hint: `one positive weight per --teacher (${n})` });
  }
  const s = given.reduce((a, b) => a + b, 0);
  return given.map((w) => w / s);
}

export class TeacherEnsemble implements TeacherModel {
  readonly config: LlamaConfig;
  readonly weights: number[];
  /** Mix alternate: the member the current batch reads (null: the mean mixture). */
  active: number | null = null;

  constructor(
    readonly members: readonly TeacherModel[],
    readonly mix: EnsembleMix,
    weights: readonly number[] | null,
    private readonly seed = 0,
  ) {
    if (members.length < 2) throw new QkdError('ARGUMENT', `an ensemble needs at least two teachers, got ${members.length}`, { field: '--teacher' });
    this.config = members[0]!.config;
    const V = this.config.vocab_size;
    members.forEach((m, i) => {
      if (m.config.vocab_size !== V) {
        throw new QkdError('CONFIG', `teacher ${i + 1} has ${m.config.vocab_size} tokens in its vocabulary and teacher 1 has ${V}; several teachers must share one tokenizer`, { field: '--teacher', hint: 'teachers of one tokenizer (a teacher of another: a separate run with distillation.cross_tokenizer)' });
      }
    });
    this.weights = ensembleWeights(members.length, weights);
  }

  /** Mix alternate: the member for a training step (1-based), drawn by the weights from a stream seeded by the step (the same on resume). */
  select(step: number): number {
    const u = new Rng(this.seed * 1000003 + step).uniform();
    let acc = 0;
    for (let i = 0; i < this.weights.length; i++) {
      acc += this.weights[i]!;
      if (u < acc) return i;
    }
    return this.weights.length - 1;
  }

  forward(ids: Int32Array, B: number, T: number, options: ForwardOptions = {}): Tensor {
    if (options.attentionProbs !== undefined || options.cache !== undefined) {
      throw new QkdError('CONFIG', 'several teachers give logits only (no attention maps, no KV cache)', { field: 'distillation.attention_weight', hint: 'attention_weight: 0, or one teacher' });
    }
    if (this.active !== null) return this.members[this.active]!.forward(ids, B, T);
    const V = this.config.vocab_size;
    const logits = noGrad(() => this.members.map((m) => m.forward(ids, B, T).data as Float32Array));
    const mix = this.mix === 'alternate' ? 'mean' : this.mix;
    return new Tensor([B, T, V], mixtureLogits(logits, B * T, V, this.weights, mix));
  }
}
