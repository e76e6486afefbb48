/**
 * DBWA as a parameter storage (docs/algorithms.md §5): every parameter's
 * weights, gradient and AdamW moments live packed at a precision tier —
 * by sensitivity the top 25% of weights at 16 bits, the middle 50% at 12,
 * the bottom 25% at 8; 1-D norm gains at 16 — with stochastic rounding.
 * The training loop owns it (optim/parameter-storage.ts), so it works under
 * any recipe (SAT, KD, SAKD, ...) and on several ranks.
 *
 * At the first step the model's float32 arena is packed into a
 * PackedParameterStore (packed-store.ts) and released; layers and the tape
 * then unpack one weight at a time. Every `reprofile_every` steps (and at
 * step 1) the data-free profile of every 2-D weight is recomputed and the
 * tiers re-chosen (logged). On several ranks the packed gradients are
 * unpacked, summed over the ranks and packed again, tensor by tensor; every
 * rank draws the same rounding noise, so the ranks stay identical.
 */
import { QkdError } from '../errors.js';
import type { SafetensorsFile, TensorToWrite } from '../io/safetensors.js';
import type { AdamW } from '../optim/adamw.js';
import type { NamedWeight, ParameterStorage, StorageBytes } from '../optim/parameter-storage.js';
import type { World } from '../parallel/world.js';
import { profileSettings, profileTensor } from '../swan/profile.js';
import type { ParameterArena } from '../tensor/arena.js';
import { Rng } from '../tensor/random.js';
import { withLoaded } from '../tensor/tensor.js';
import { assignTiers, tierBytes, type PrecisionTier } from './dbwa.js';
import { PackedParameterStore, restorePackedState, type PackedStoreLayout } from './packed-store.js';

export interface DbwaSettings {
  /** One tier for every tensor (16 = the all-bf16 baseline); null = by sensitivity. */
  uniform_tier: PrecisionTier | null;
  stochastic_rounding: boolean;
  /** Re-profile and re-tier every N steps. */
  reprofile_every: number;
}

interface DbwaState {
  rng: ReturnType<Rng['getState']>;
  tiers: [string, PrecisionTier][];
  /** Tier and length of each parameter's packed state (the bytes are in storage.safetensors). */
  packed?: PackedStoreLayout;
}

export class DbwaStorage implements ParameterStorage {
  readonly kind = 'dbwa';
  readonly float32Moments = false;
  private readonly rng: Rng;
  private tiers = new Map<string, PrecisionTier>();
  private store: PackedParameterStore | null = null;
  private arena: ParameterArena | null = null;
  /** On resume: the packed weights and moments of the checkpoint, until the store takes them. */
  private saved: ReturnType<typeof restorePackedState> | null = null;
  private readonly notes: string[] = [];

  constructor(
    private readonly settings: DbwaSettings,
    seed: number,
  ) {
    this.rng = new Rng(seed + 109);
  }

  beginStep(step: number, arena: ParameterArena, weights: readonly NamedWeight[]): void {
    if (this.arena !== null && this.arena !== arena) throw new QkdError('STATE', 'DbwaStorage: a storage belongs to one model', { hint: 'a new storage per run' });
    this.arena = arena;
    // On resume the store comes back at the checkpoint's tiers first, so that a re-profile at this step moves it as in an uninterrupted run.
    if (this.store === null && this.saved !== null) this.openStore(arena);
    if (step === 1 || (step - 1) % this.settings.reprofile_every === 0) this.retier(step, arena, weights);
    if (this.store === null) this.openStore(arena);
    this.store!.zeroGrad();
  }

  /** Data-free profile of every 2-D weight → tiers (the same profile, seeds and order as SAT's re-profile). */
  private retier(step: number, arena: ParameterArena, weights: readonly NamedWeight[]): void {
    const uniform = this.settings.uniform_tier;
    let tiers: Map<string, PrecisionTier>;
    if (uniform !== null) tiers = new Map(weights.map((w) => [w.name, uniform]));
    else {
      const settings = profileSettings({ probes: 4 });
      const composites = new Map<string, number>();
      weights.forEach((w, i) => {
        const p = withLoaded(w.tensor, () => profileTensor(w.name, w.tensor.shape, w.tensor.data as Float32Array, settings, new Rng(step * 7919 + i)));
        composites.set(w.name, p.composite ?? 0);
      });
      tiers = assignTiers(composites);
    }
    const count = (t: PrecisionTier) => [...tiers.values()].filter((x) => x === t).length;
    this.notes.push(`step ${step}: DBWA tiers 16-bit ×${count(16)}, 12-bit ×${count(12)}, 8-bit ×${count(8)} (1-D norms: ${uniform ?? 16}-bit)`);
    // 1-D tensors (norm gains) are tiny and not profiled: stored at 16 bits, as in the bf16 baseline.
    for (const e of arena.entries) if (!tiers.has(e.name)) tiers.set(e.name, uniform ?? 16);
    this.tiers = tiers;
    this.store?.setTiers(tiers);
  }

  private openStore(arena: ParameterArena): void {
    this.store = new PackedParameterStore(arena, this.tiers, () => this.rounding(), this.saved);
    this.saved = null;
  }

  private requireStore(): PackedParameterStore {
    if (this.store === null) throw new QkdError('STATE', 'DBWA: no packed parameter store yet', { hint: 'beginStep runs before the first update' });
    return this.store;
  }

  private rounding(): Rng | null {
    return this.settings.stochastic_rounding ? this.rng : null;
  }

  reduceGradients(world: World): void {
    if (world.size > 1) this.requireStore().reduceGradients(world);
  }

  gradNorm(): number {
    return this.requireStore().gradNorm();
  }

  update(optimizer: AdamW, lr: number, gradScale: number): void {
    this.requireStore().update(optimizer, lr, gradScale);
  }

  weightsForDigest(): ArrayBufferView {
    const parts = this.requireStore().checkpointBytes().filter((p) => p.name.endsWith('.packed'));
    const all = new Uint8Array(parts.reduce((n, p) => n + p.bytes.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p.bytes, at);
      at += p.bytes.length;
    }
    return all;
  }

  getState(): DbwaState {
    return { rng: this.rng.getState(), tiers: [...this.tiers.entries()], packed: this.store?.layout() };
  }

  checkpointTensors(): TensorToWrite[] {
    return (this.store?.checkpointBytes() ?? []).map(({ name, bytes }) => ({ name, dtype: 'u8' as const, shape: [bytes.length], data: bytes }));
  }

  restore(state: unknown, file: SafetensorsFile | null): void {
    const s = state as Partial<DbwaState> | null;
    if (s === null || s === undefined || !Array.isArray(s.tiers) || s.rng === undefined) {
      throw new QkdError('IO', 'DBWA: the checkpoint has no DBWA storage state', { field: 'storage', hint: 'a checkpoint written with DBWA on (sat.dbwa.enabled: true); a DBWA checkpoint of qkd before the storage strategy cannot be resumed' });
    }
    this.rng.setState(s.rng);
    this.tiers = new Map(s.tiers);
    const layout = s.packed;
    if (layout === undefined || layout.length === 0) return; // saved before the first step packed anything
    if (file === null) {
      throw new QkdError('IO', 'DBWA: the checkpoint has no storage.safetensors with the packed weights and moments', { hint: 'a checkpoint written by qkd with DBWA on' });
    }
    this.saved = restorePackedState(layout, (name) => {
      const entry = file.entry(name);
      if (entry.dtype !== 'u8') throw new QkdError('DTYPE', `tensor '${name}' has dtype ${entry.dtype}`, { path: file.path, field: name, hint: 'U8 (packed DBWA state)' });
      return file.readBytes(name);
    }, file.path);
  }

  /**
   * Accounted bytes: every tensor at its tier's packed size (1-D norm gains
   * at 16 bits, or at `uniform_tier`); held: the packed store with its update
   * scratch (float32 until the first step packs the model).
   */
  bytes(arena: ParameterArena): StorageBytes {
    let weights = 0;
    for (const e of arena.entries) {
      const tier = this.tiers.get(e.name);
      weights += tier === undefined ? 4 * e.size : tierBytes(e.size, tier);
    }
    return { weights, gradients: weights, moments: 2 * weights, total: 4 * weights, resident: this.store === null ? 16 * arena.size : this.store.residentBytes() };
  }

  takeNotes(): string[] {
    return this.notes.splice(0);
  }
}
