/**
 * Quantization-aware training (docs/algorithms.md §2 and §4): every quantized
 * weight of a model (the Linear projections, lm_head and the embedding
 * table, i.e. every 2-D weight the packed checkpoint stores at b bits) is
 * used through fakeQuantize in the forward pass once fake quantization is
 * switched on; the straight-through estimator carries the gradient back to
 * the float32 master weights. The rounding-error penalty
 *   L_quant = Σ_l ‖ŵ_l − w_l‖_F² / ‖w_l‖_F²
 * pulls each weight towards its own quantization grid: ŵ_l is a constant
 * target (detached) and ‖w_l‖² a constant scale, so dL/dw = −2(ŵ − w)/‖w‖².
 *
 * A tied lm_head shares the embedding table; it is transformed once per use
 * and penalised once.
 *
 * With a ggml format per weight (`formatOf`, e.g. Q4_K), ŵ is that format's
 * encode-then-decode, the very weights the exported GGUF holds: llama.cpp's
 * reference quantizer refits every block's scales to the current weights at
 * each forward (none are learned), and the straight-through gradient is the
 * identity (block formats clip nothing).
 *
 * With learned step sizes (LSQ / LSQ+, docs/qat.md), ŵ is
 * learnedFakeQuantize with per-group parameters the caller owns (the
 * recipe's extra parameters, trained and checkpointed with the student), and
 * L_quant's target is that same ŵ.
 */
import { QkdError } from '../errors.js';
import type { LlamaModel } from '../models/llama.js';
import { Embedding, Linear } from '../nn/layers.js';
import { blockFakeQuantize, fakeQuantize, learnedFakeQuantize, quantizeDequantize, type FakeQuantOptions } from '../tensor/ops/quant.js';
import { noGrad } from '../tensor/tape.js';
import { roundTrip, type GgmlWritableName } from '../quant/ggml-formats.js';
import { sub, square } from '../tensor/ops/elementwise.js';
import { sumAll } from '../tensor/ops/reduce.js';
import { scale, add } from '../tensor/ops/elementwise.js';
import { Tensor, withLoaded } from '../tensor/tensor.js';

export interface QatOptions {
  bits: number;
  symmetric: boolean;
  /** 'channel' (per output row, the default deployment target) or 'group'. */
  granularity: 'channel' | 'group';
  groupSize: number;
  /** A ggml format per weight (arena name, shape); when given, it replaces the uniform b-bit grid. */
  formatOf?: (name: string, shape: readonly number[]) => GgmlWritableName;
  /** Learned step sizes: each weight's θ = ln s per group and (asymmetric) its offsets. */
  learned?: LearnedParameters;
}

/** Where a weight's learned quantizer parameters live (tensors trained with the model). */
export interface LearnedParameters {
  logStep(name: string): Tensor;
  offset(name: string): Tensor | null;
}

/** The distinct weights fake quantization covers (Linear and Embedding weights), by arena name, in module order. */
export function fakeQuantizedWeights(model: LlamaModel): Map<string, Tensor> {
  const byTensor = new Map<Tensor, string>();
  for (const e of model.arena.entries) byTensor.set(e.tensor, e.name);
  const out = new Map<string, Tensor>();
  for (const m of model.namedModules().values()) {
    if (!(m instanceof Linear) && !(m instanceof Embedding)) continue;
    const name = byTensor.get(m.weight);
    if (name !== undefined) out.set(name, m.weight);
  }
  return out;
}

/** Turns fake quantization of a model's 2-D weights on and off, and computes L_quant. */
export class FakeQuantController {
  enabled = false;
  readonly options: FakeQuantOptions;
  /** The distinct weight tensors under fake quantization, by arena name. */
  readonly weights: ReadonlyMap<string, Tensor>;
  private readonly modules: (Linear | Embedding)[] = [];
  private readonly learned: LearnedParameters | undefined;
  private readonly grid: { bits: number; symmetric: boolean; groupSize: number };

  /** The ggml format of each weight under block fake quantization (empty: the uniform grid). */
  readonly formats = new Map<string, GgmlWritableName>();

  constructor(model: LlamaModel, options: QatOptions) {
    if (options.learned !== undefined && options.formatOf !== undefined) {
      throw new QkdError('CONFIG', 'learned step sizes apply to the uniform b-bit grid; a ggml format refits its own block scales', { field: 'quantization.learned_step_size', hint: 'learned_step_size: false with quantization.format' });
    }
    if (options.formatOf === undefined && (!Number.isInteger(options.bits) || options.bits < 2 || options.bits > 8)) {
      throw new QkdError('CONFIG', `quantization.bits must be 2..8 for fake quantization, got ${options.bits}`, { field: 'quantization.bits' });
    }
    this.options = { bits: options.bits, symmetric: options.symmetric, granularity: options.granularity, groupSize: options.groupSize };
    this.learned = options.learned;
    this.grid = { bits: options.bits, symmetric: options.symmetric, groupSize: options.granularity === 'group' ? options.groupSize : 0 };
    const weights = new Map<string, Tensor>();
    const byTensor = new Map<Tensor, string>();
    for (const e of model.arena.entries) byTensor.set(e.tensor, e.name);
    for (const m of model.namedModules().values()) {
      if (!(m instanceof Linear) && !(m instanceof Embedding)) continue;
      if (m.weightTransform !== null) throw new QkdError('STATE', `module '${m.name}' already has a weight transform`, { field: m.name });
      const name = byTensor.get(m.weight);
      if (name === undefined) continue;
      weights.set(name, m.weight);
      const format = options.formatOf?.(name, m.weight.shape);
      if (format !== undefined) this.formats.set(name, format);
      const learned = options.learned;
      const grid = { bits: options.bits, symmetric: options.symmetric, groupSize: options.granularity === 'group' ? options.groupSize : 0 };
      m.weightTransform = (w) =>
        !this.enabled
          ? w
          : format !== undefined
            ? blockFakeQuantize(w, (x) => roundTrip(format, x))
            : learned !== undefined
              ? learnedFakeQuantize(w, learned.logStep(name), learned.offset(name), grid)
              : fakeQuantize(w, this.options);
      this.modules.push(m);
    }
    this.weights = weights;
  }

  /**
   * L_quant over the quantized weights (a graph scalar; gradient to w only).
   * Each weight is unpacked just while its term is computed when the
   * parameters are packed (DBWA storage).
   */
  quantLoss(): Tensor {
    let total: Tensor | null = null;
    for (const [name, w] of this.weights) {
      const term = withLoaded(w, () => this.quantTerm(name, w));
      if (term === null) continue;
      total = total === null ? term : add(total, term);
    }
    return total ?? new Tensor([], Float32Array.of(0));
  }

  /** ‖w − Q(w)‖² / ‖w‖² of one weight (null for an all-zero weight). */
  private quantTerm(name: string, w: Tensor): Tensor | null {
    const rows = w.shape[0]!;
    let target: Tensor;
    const format = this.formats.get(name);
    if (format !== undefined) target = new Tensor(w.shape, roundTrip(format, w.data as Float32Array));
    else if (this.learned !== undefined) {
      const learned = this.learned;
      target = noGrad(() => learnedFakeQuantize(new Tensor(w.shape, w.data), learned.logStep(name), learned.offset(name), this.grid));
    } else {
      target = new Tensor(w.shape);
      quantizeDequantize(w.data, rows, w.size / rows, this.options, target.data, null);
    }
    let norm2 = 0;
    for (let i = 0; i < w.size; i++) norm2 += w.data[i]! * w.data[i]!;
    if (!(norm2 > 0)) return null;
    return scale(sumAll(square(sub(w, target))), 1 / norm2);
  }

  /** Removes the transforms (the model is plain float again). */
  detach(): void {
    for (const m of this.modules) m.weightTransform = null;
    this.modules.length = 0;
  }
}
