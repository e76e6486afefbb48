/**
 * Frozen parameters kept as bfloat16 in memory (a teacher: half the bytes
 * of float32, and what most checkpoints store). A ParameterSource: a layer
 * that needs float32 values gets them widened for the duration of its op;
 * Linear and Embedding read the bf16 bits directly when no gradient is
 * recorded (bf16 GEMM, row gather), so a model's weights are never all
 * float32 at once. Frozen: a gradient is refused.
 */
import { QkdError } from '../errors.js';
import { fromBf16 } from './dtype.js';
import { UNLOADED, type ParameterSource, type Tensor } from './tensor.js';
import type { FloatArray } from './tensor.js';

export class Bf16Store implements ParameterSource {
  private readonly bits = new Map<Tensor, Uint16Array>();
  private readonly loads = new Map<Tensor, number>();

  /** Stores t's values (raw bf16 bits, t.size of them) and makes t sourced here. */
  set(t: Tensor, bits: Uint16Array): void {
    if (bits.length !== t.size) throw new QkdError('SHAPE', `Bf16Store: ${bits.length} values for ${t.name ?? 'a tensor'} of ${t.size}`, { field: t.name ?? undefined });
    this.bits.set(t, bits);
    t.source = this;
    t.data = UNLOADED;
  }

  /** The stored bits of t (undefined when t is not held here). */
  bitsOf(t: Tensor): Uint16Array | undefined {
    return this.bits.get(t);
  }

  /** Bytes held. */
  get bytes(): number {
    let n = 0;
    for (const b of this.bits.values()) n += b.byteLength;
    return n;
  }

  load(t: Tensor): void {
    const n = this.loads.get(t) ?? 0;
    this.loads.set(t, n + 1);
    if (n > 0) return;
    const bits = this.bits.get(t);
    if (bits === undefined) throw new QkdError('STATE', `Bf16Store.load: ${t.name ?? 'tensor'} is not held here`);
    t.data = fromBf16(bits);
  }

  unload(t: Tensor): void {
    const n = this.loads.get(t) ?? 0;
    if (n === 0) throw new QkdError('STATE', `Bf16Store.unload: ${t.name ?? 'tensor'} is not loaded`);
    this.loads.set(t, n - 1);
    if (n === 1) t.data = UNLOADED;
  }

  addGrad(t: Tensor, _grad: FloatArray): void {
    throw new QkdError('STATE', `${t.name ?? 'a parameter'} is a frozen bfloat16 weight and takes no gradient`, { field: t.name ?? undefined, hint: 'load the model in float32 to train it' });
  }
}
