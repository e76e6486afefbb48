/**
 * Basic layers over parameter tensors (usually arena views): Linear,
 * Embedding, RMSNorm. Each forward goes through Module.emit so hooks fire,
 * and loads a weight that lives in a ParameterSource (DBWA) just for itself.
 */
import { Module } from './module.js';
import { withLoaded, type Tensor } from '../tensor/tensor.js';
import type { ParameterArena } from '../tensor/arena.js';
import { linear, linearBf16 } from '../tensor/ops/matmul.js';
import { embedding, embeddingBf16 } from '../tensor/ops/embedding.js';
import { Bf16Store } from '../tensor/bf16-store.js';
import { gradEnabled } from '../tensor/tape.js';
import { addRmsNorm, rmsNorm } from '../tensor/ops/norm.js';
import { addScalar } from '../tensor/ops/elementwise.js';

/** Transforms applied to a weight before use (fake quantization, noise). */
export type WeightTransform = (weight: Tensor, module: Linear | Embedding) => Tensor;

export class Linear extends Module {
  /** [out, in], Hugging Face layout. */
  readonly weight: Tensor;
  readonly bias: Tensor | undefined;
  /** Optional transform of the weight in forward (set by QAT / SAT). */
  weightTransform: WeightTransform | null = null;

  constructor(name: string, weight: Tensor, bias?: Tensor) {
    super(name);
    this.weight = weight;
    this.bias = bias;
  }

  forward(x: Tensor): Tensor {
    // A frozen bf16 weight outside autograd: the bf16 GEMM reads it as stored.
    const bits = this.weightTransform === null && !gradEnabled() && this.weight.source instanceof Bf16Store ? this.weight.source.bitsOf(this.weight) : undefined;
    const bias = this.bias;
    const withBias = <T>(fn: () => T): T => (bias === undefined ? fn() : withLoaded(bias, fn));
    if (bits !== undefined) return this.emit(withBias(() => linearBf16(x, bits, this.weight.shape[0]!, this.weight.shape[1]!, bias)), x);
    const y = withLoaded(this.weight, () => withBias(() => linear(x, this.weightTransform ? this.weightTransform(this.weight, this) : this.weight, bias)));
    return this.emit(y, x);
  }
}

export class Embedding extends Module {
  /** [V, C] */
  readonly weight: Tensor;
  /** Optional transform of the table in forward (set by QAT / SAT). */
  weightTransform: WeightTransform | null = null;

  constructor(name: string, weight: Tensor) {
    super(name);
    this.weight = weight;
  }

  forward(ids: Int32Array, idsShape: readonly number[]): Tensor {
    const bits = this.weightTransform === null && !gradEnabled() && this.weight.source instanceof Bf16Store ? this.weight.source.bitsOf(this.weight) : undefined;
    if (bits !== undefined) return this.emit(embeddingBf16(ids, idsShape, bits, this.weight.shape[0]!, this.weight.shape[1]!));
    return this.emit(withLoaded(this.weight, () => embedding(ids, idsShape, this.weightTransform ? this.weightTransform(this.weight, this) : this.weight)));
  }
}

export class RMSNorm extends Module {
  readonly weight: Tensor;
  readonly eps: number;
  /** Added to the weight before scaling: 0, or 1 for Gemma's x̂·(1 + w). */
  readonly offset: number;

  constructor(name: string, weight: Tensor, eps: number, offset = 0) {
    super(name);
    this.weight = weight;
    this.eps = eps;
    this.offset = offset;
  }

  /** Normalises over the last axis (a head's D channels for q/k norms). */
  forward(x: Tensor): Tensor {
    return this.emit(withLoaded(this.weight, () => rmsNorm(x, this.offset === 0 ? this.weight : addScalar(this.weight, this.offset), this.eps)));
  }

  /** x + delta (the residual stream) and this norm of it, in one pass: { sum, normed }, normed emitted as forward's output. */
  forwardAfterAdd(x: Tensor, delta: Tensor): { sum: Tensor; normed: Tensor } {
    const r = withLoaded(this.weight, () => addRmsNorm(x, delta, this.offset === 0 ? this.weight : addScalar(this.weight, this.offset), this.eps));
    return { sum: r.sum, normed: this.emit(r.normed) };
  }
}

/** A weight-carrying layer of a model with its arena name. */
export interface WeightModule {
  /** The weight's parameter name in the arena. */
  name: string;
  module: Linear | Embedding;
  tensor: Tensor;
}

/**
 * The Linear and Embedding layers under `root` whose weight is an `arena`
 * parameter, each weight once (a tied lm_head is the embedding's), in module
 * order: the weights the SAT / SAKD regularisers and noise act on.
 */
export function weightModules(root: Module, arena: ParameterArena): WeightModule[] {
  const byTensor = new Map<Tensor, string>();
  for (const e of arena.entries) byTensor.set(e.tensor, e.name);
  const out: WeightModule[] = [];
  const seen = new Set<string>();
  for (const m of root.namedModules().values()) {
    if (!(m instanceof Linear) && !(m instanceof Embedding)) continue;
    const name = byTensor.get(m.weight);
    if (name === undefined || seen.has(name)) continue;
    seen.add(name);
    out.push({ name, module: m, tensor: m.weight });
  }
  return out;
}
