/**
 * Parameter arena: all parameters of a model live in one contiguous float32
 * buffer, and their gradients in a second one, with named views. This makes
 * checkpoints, optimiser state, gradient clipping and re-packing simple
 * (llm.c / llama2.c style).
 */
import { QkdError, fmtShape } from '../errors.js';
import { Tensor, UNLOADED, allocFloat, shapeSize, type FloatArray, type ParameterSource } from './tensor.js';

export interface ParameterSpec {
  name: string;
  shape: readonly number[];
}

export interface ArenaEntry {
  name: string;
  shape: readonly number[];
  /** Element offset in the arena. */
  offset: number;
  size: number;
  tensor: Tensor;
}

export class ParameterArena {
  /** All values (empty after releaseStorage). */
  data: FloatArray;
  /** All gradients (empty after releaseStorage). */
  grad: FloatArray;
  readonly entries: readonly ArenaEntry[];
  private readonly byName: Map<string, ArenaEntry>;
  private readonly total: number;

  /**
   * allocate false: no float32 buffers at all (values and gradients); every
   * tensor starts UNLOADED and must be given to a ParameterSource (a frozen
   * bf16 model) before use.
   */
  constructor(specs: readonly ParameterSpec[], options: { allocate?: boolean } = {}) {
    const allocate = options.allocate ?? true;
    let total = 0;
    const seen = new Set<string>();
    for (const s of specs) {
      if (seen.has(s.name)) throw new QkdError('ARGUMENT', `ParameterArena: duplicate parameter name '${s.name}'`);
      seen.add(s.name);
      total += shapeSize(s.shape);
    }
    this.total = total;
    this.data = allocate ? allocFloat(total) : UNLOADED;
    this.grad = allocate ? allocFloat(total) : UNLOADED;
    const entries: ArenaEntry[] = [];
    let offset = 0;
    for (const s of specs) {
      const size = shapeSize(s.shape);
      const tensor = allocate ? new Tensor(s.shape, this.data.subarray(offset, offset + size), true) : new Tensor(s.shape, UNLOADED, false);
      if (allocate) tensor.grad = this.grad.subarray(offset, offset + size);
      tensor.name = s.name;
      entries.push({ name: s.name, shape: [...s.shape], offset, size, tensor });
      offset += size;
    }
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  /** Number of parameters. */
  get size(): number {
    return this.total;
  }

  /** True after releaseStorage: the values live in a ParameterSource. */
  get released(): boolean {
    return this.data.length !== this.total;
  }

  /**
   * Hands every parameter to `source` (which must already hold its values)
   * and drops the arena's float32 buffers: each tensor's data becomes the
   * UNLOADED placeholder and its gradients go to the source (see
   * ParameterSource). Whole-arena operations (zeroGrad, AdamW.update,
   * clipping arena.grad) no longer apply; the source's owner takes them over.
   */
  releaseStorage(source: ParameterSource): void {
    for (const e of this.entries) {
      e.tensor.data = UNLOADED;
      e.tensor.grad = null;
      e.tensor.source = source;
    }
    this.data = UNLOADED;
    this.grad = UNLOADED;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The parameter tensor (a view into the arena, its grad too; after releaseStorage its values live in the source). */
  get(name: string): Tensor {
    const e = this.byName.get(name);
    if (e === undefined) throw new QkdError('ARGUMENT', `no parameter named '${name}'`, { field: name });
    return e.tensor;
  }

  entry(name: string): ArenaEntry {
    const e = this.byName.get(name);
    if (e === undefined) throw new QkdError('ARGUMENT', `no parameter named '${name}'`, { field: name });
    return e;
  }

  /** Copies values into a parameter, checking the shape. */
  set(name: string, shape: readonly number[], values: ArrayLike<number>): void {
    const e = this.entry(name);
    if (shape.length !== e.shape.length || shape.some((d, i) => d !== e.shape[i]) || values.length !== e.size) {
      throw new QkdError('SHAPE', `parameter '${name}' has shape ${fmtShape(e.shape)}, got ${fmtShape(shape)} with ${values.length} values`, { field: name });
    }
    e.tensor.data.set(values);
  }

  zeroGrad(): void {
    this.grad.fill(0);
  }
}
