/**
 * DBWA's parameter store (docs/algorithms.md §5): every parameter's weights, gradient and
 * AdamW moments live packed at the parameter's precision tier, and float32
 * exists only as scratch while a kernel needs it.
 *
 * The store is the ParameterSource of a model whose arena released its
 * float32 buffers (ParameterArena.releaseStorage):
 *  - forward: a layer loads its weight (unpacked into a pooled float32
 *    buffer), runs, and unloads it; the tape re-loads it for each op's
 *    backward that uses it (so each weight is unpacked at least twice per
 *    micro-batch instead of being held: more with SAT's per-weight penalties
 *    and noise, and for ops whose backward does not read it);
 *  - backward: each op's gradient contribution is added into the packed
 *    gradient (the first one of a step is packed directly, later ones —
 *    another micro-batch, a tied weight used twice, a regulariser — are
 *    added after unpacking), so no float32 gradient buffer outlives its op;
 *  - update: tensor by tensor, w, g, m and v are unpacked into four scratch
 *    buffers the size of the largest tensor, AdamW runs, and w, m, v are
 *    packed back (stochastic rounding when an Rng is given).
 *
 * Resident training state is therefore the packed bytes plus the scratch
 * (`residentBytes`), against 16 bytes per parameter for float32 training.
 * Not counted there: the unpacked buffers go back to the tensor buffer pool
 * on unload (a few tensors' worth at a time, reused by the next load). The
 * price is speed: the unpacking and packing on every step.
 */
import { QkdError } from '../errors.js';
import type { AdamW } from '../optim/adamw.js';
import type { World } from '../parallel/world.js';
import type { ArenaEntry, ParameterArena } from '../tensor/arena.js';
import { recycle, takeBuffer, UNLOADED, type FloatArray, type ParameterSource, type Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/random.js';
import { PackedArray, tierBytes, type PrecisionTier } from './dbwa.js';

interface Slot {
  entry: ArenaEntry;
  w: PackedArray;
  /** The step's gradient so far; `gradLive` false means zero (nothing added this step). */
  g: PackedArray | null;
  gradLive: boolean;
  /** AdamW moments; null until the first update (zeros). */
  m: PackedArray | null;
  v: PackedArray | null;
  loads: number;
}

/** What a checkpoint needs besides the bytes: each parameter's tier and whether it has moments yet. */
export type PackedStoreLayout = [name: string, tier: PrecisionTier, length: number, hasMoments: boolean][];

/** Packs src into `packed` when its tier and length fit, else into a new PackedArray. */
function repack(packed: PackedArray | null, src: Float32Array, tier: PrecisionTier, rng: Rng | null): PackedArray {
  if (packed !== null && packed.tier === tier && packed.length === src.length) {
    packed.encodeFrom(src, rng);
    return packed;
  }
  return PackedArray.encode(src, tier, rng);
}

/** Runs a packing step, naming the parameter in a non-finite-value error (a diverged run). */
function named(s: Slot, what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof QkdError)) throw err;
    throw new QkdError('ARGUMENT', `DBWA: the ${what} of '${s.entry.name}' cannot be packed: ${err.message}`, { field: s.entry.name, hint: 'finite values (the run diverged: lower the learning rate or raise the precision tier)' });
  }
}

export class PackedParameterStore implements ParameterSource {
  private readonly slots = new Map<Tensor, Slot>();
  private readonly byName = new Map<string, Slot>();
  /** Float32 scratch for one tensor's w, g, m, v (update, accumulation, norms). */
  private scratch: { w: Float32Array; g: Float32Array; m: Float32Array; v: Float32Array } | null = null;

  /**
   * Packs every parameter of `arena` at its tier (from its current float32
   * values, or from `saved` packed weights and moments on resume), then
   * releases the arena's float32 buffers.
   */
  constructor(
    arena: ParameterArena,
    tiers: ReadonlyMap<string, PrecisionTier>,
    private readonly rounding: () => Rng | null,
    saved: ReadonlyMap<string, { w: PackedArray; m: PackedArray | null; v: PackedArray | null }> | null = null,
  ) {
    if (arena.released) throw new QkdError('STATE', 'PackedParameterStore: the arena already gave its storage to a source');
    for (const e of arena.entries) {
      const tier = tiers.get(e.name);
      if (tier === undefined) throw new QkdError('STATE', `DBWA: no precision tier for '${e.name}'`, { field: e.name });
      const s = saved?.get(e.name);
      if (saved !== null && s === undefined) throw new QkdError('STATE', `DBWA: the checkpoint has no packed weights for '${e.name}'`, { field: e.name });
      if (s !== undefined && (s.w.length !== e.size || s.w.tier !== tier)) {
        throw new QkdError('SHAPE', `DBWA: saved packed weights of '${e.name}' have ${s.w.length} values at ${s.w.tier} bits`, { field: e.name, hint: `${e.size} values at ${tier} bits` });
      }
      const slot: Slot = { entry: e, w: s?.w ?? PackedArray.encode(e.tensor.data as Float32Array, tier, rounding()), g: null, gradLive: false, m: s?.m ?? null, v: s?.v ?? null, loads: 0 };
      this.slots.set(e.tensor, slot);
      this.byName.set(e.name, slot);
    }
    arena.releaseStorage(this);
  }

  private slot(t: Tensor): Slot {
    const s = this.slots.get(t);
    if (s === undefined) throw new QkdError('STATE', `PackedParameterStore: ${t} is not one of its parameters`);
    return s;
  }

  load(t: Tensor): void {
    const s = this.slot(t);
    if (s.loads++ > 0) return;
    const buf = takeBuffer(s.entry.size); // fully overwritten by the decode
    s.w.decodeInto(buf);
    t.data = buf;
  }

  unload(t: Tensor): void {
    const s = this.slot(t);
    if (s.loads === 0) throw new QkdError('STATE', `PackedParameterStore.unload: ${t} is not loaded`);
    if (--s.loads > 0) return;
    recycle(t.data);
    t.data = UNLOADED;
  }

  addGrad(t: Tensor, grad: FloatArray): void {
    const s = this.slot(t);
    const tier = s.w.tier;
    named(s, 'gradient', () => {
      if (!s.gradLive) {
        s.g = repack(s.g, grad, tier, this.rounding());
        s.gradLive = true;
        return;
      }
      const sum = this.scratchFor(s.entry.size).g;
      s.g!.decodeInto(sum);
      for (let i = 0; i < sum.length; i++) sum[i]! += grad[i]!;
      s.g = repack(s.g, sum, tier, this.rounding());
    });
  }

  /** Starts a step: every gradient is zero again. */
  zeroGrad(): void {
    for (const s of this.slots.values()) s.gradLive = false;
  }

  /** Moves parameters to new tiers (a re-profile): weights and moments are re-packed. */
  setTiers(tiers: ReadonlyMap<string, PrecisionTier>): void {
    for (const s of this.slots.values()) {
      const tier = tiers.get(s.entry.name);
      if (tier === undefined || tier === s.w.tier) continue;
      const buf = this.scratchFor(s.entry.size).w;
      const move = (p: PackedArray): PackedArray => {
        p.decodeInto(buf);
        return PackedArray.encode(buf, tier, this.rounding());
      };
      s.w = move(s.w);
      if (s.m !== null) s.m = move(s.m);
      if (s.v !== null) s.v = move(s.v);
      s.g = null;
      s.gradLive = false;
    }
  }

  /** Tier of a parameter's packed values. */
  tierOf(name: string): PrecisionTier {
    const s = this.byName.get(name);
    if (s === undefined) throw new QkdError('ARGUMENT', `no parameter named '${name}'`, { field: name });
    return s.w.tier;
  }

  /**
   * Sums every gradient over the ranks of a data-parallel run, tensor by
   * tensor: unpacked (zeros where nothing was added), all-reduced, packed
   * again. The packing draws the same rounding noise on every rank (the
   * same tensors in the same order), so every rank ends with the same
   * packed sum.
   */
  reduceGradients(world: World): void {
    for (const s of this.slots.values()) {
      const g = this.scratchFor(s.entry.size).g;
      if (s.gradLive) s.g!.decodeInto(g);
      else g.fill(0);
      world.allreduceSum(g);
      named(s, 'summed gradient', () => {
        s.g = repack(s.g, g, s.w.tier, this.rounding());
        s.gradLive = true;
      });
    }
  }

  /** L2 norm of all gradients of this step (float64 accumulation). */
  gradNorm(): number {
    let sum = 0;
    for (const s of this.slots.values()) {
      if (!s.gradLive) continue;
      const g = this.scratchFor(s.entry.size).g;
      s.g!.decodeInto(g);
      for (let i = 0; i < g.length; i++) sum += g[i]! * g[i]!;
    }
    return Math.sqrt(sum);
  }

  /** One AdamW step over every parameter, with the gradients multiplied by `gradScale` (clipping). */
  update(optimizer: AdamW, lr: number, gradScale: number): void {
    const { c1, c2 } = optimizer.beginUpdate();
    const rng = this.rounding();
    for (const s of this.slots.values()) {
      const n = s.entry.size;
      const { w, g, m, v } = this.scratchFor(n);
      s.w.decodeInto(w);
      if (s.gradLive) {
        s.g!.decodeInto(g);
        if (gradScale !== 1) for (let i = 0; i < n; i++) g[i]! *= gradScale;
      } else {
        g.fill(0);
      }
      if (s.m === null) m.fill(0);
      else s.m.decodeInto(m);
      if (s.v === null) v.fill(0);
      else s.v.decodeInto(v);
      optimizer.updateSlice(s.entry, w, g, m, v, lr, c1, c2);
      const tier = s.w.tier;
      named(s, 'updated weights or moments', () => {
        s.w = repack(s.w, w, tier, rng);
        s.m = repack(s.m, m, tier, rng);
        s.v = repack(s.v, v, tier, rng);
      });
    }
  }

  /** Float32 scratch with room for n values (grown to the largest tensor once). */
  private scratchFor(n: number): { w: Float32Array; g: Float32Array; m: Float32Array; v: Float32Array } {
    if (this.scratch === null || this.scratch.w.length < n) {
      let largest = n;
      for (const s of this.slots.values()) largest = Math.max(largest, s.entry.size);
      this.scratch = { w: new Float32Array(largest), g: new Float32Array(largest), m: new Float32Array(largest), v: new Float32Array(largest) };
    }
    const sc = this.scratch;
    return { w: sc.w.subarray(0, n), g: sc.g.subarray(0, n), m: sc.m.subarray(0, n), v: sc.v.subarray(0, n) };
  }

  /** Bytes held: packed weights, gradients and moments plus the update's float32 scratch (not the pooled load buffers). */
  residentBytes(): number {
    let bytes = this.scratch === null ? 0 : 4 * 4 * this.scratch.w.length;
    for (const s of this.slots.values()) bytes += s.w.bytes + (s.g?.bytes ?? 0) + (s.m?.bytes ?? 0) + (s.v?.bytes ?? 0);
    return bytes;
  }

  /** Tier, length and moment presence of every parameter, for a checkpoint's state. */
  layout(): PackedStoreLayout {
    return [...this.byName].map(([name, s]) => [name, s.w.tier, s.entry.size, s.m !== null]);
  }

  /** The packed bytes a checkpoint saves (`<name>.packed`, and `.exp_avg`, `.exp_avg_sq` once updated). */
  checkpointBytes(): { name: string; bytes: Uint8Array }[] {
    const out: { name: string; bytes: Uint8Array }[] = [];
    for (const [name, s] of this.byName) {
      out.push({ name: `${name}.packed`, bytes: s.w.storage });
      if (s.m !== null && s.v !== null) {
        out.push({ name: `${name}.exp_avg`, bytes: s.m.storage });
        out.push({ name: `${name}.exp_avg_sq`, bytes: s.v.storage });
      }
    }
    return out;
  }
}

/**
 * Rebuilds the packed weights and moments a checkpoint saved, from its
 * layout and a byte reader; a size mismatch names the tensor and `path`.
 */
export function restorePackedState(layout: PackedStoreLayout, read: (name: string) => Uint8Array, path: string): Map<string, { w: PackedArray; m: PackedArray | null; v: PackedArray | null }> {
  const out = new Map<string, { w: PackedArray; m: PackedArray | null; v: PackedArray | null }>();
  for (const [name, tier, length, hasMoments] of layout) {
    const unpack = (field: string): PackedArray => {
      const bytes = read(`${name}.${field}`);
      const expected = tierBytes(length, tier);
      if (bytes.length !== expected) throw new QkdError('SHAPE', `tensor '${name}.${field}' has ${bytes.length} bytes`, { path, field: `${name}.${field}`, hint: `${expected} bytes (${length} values packed at ${tier} bits)` });
      return PackedArray.fromStorage(tier, length, bytes);
    };
    out.set(name, { w: unpack('packed'), m: hasMoments ? unpack('exp_avg') : null, v: hasMoments ? unpack('exp_avg_sq') : null });
  }
  return out;
}
