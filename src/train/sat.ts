/**
 * Sensitivity-aware training (SPEC section 5) as a recipe of the one
 * training loop: `qkd train --recipe sat`.
 *
 *   L = L_task + α_κ · Σ_l max(0, κ_l − κ_max)²        (KDS, kurtosis ceiling)
 *              + α_σ · Σ_l σ_max(W_l) / ‖W_l‖_F         (SC, power iteration)
 * TQNI: the 2-D weights in the top 20% of the current composite score are
 * used as W + U(−Δ/2, Δ/2) (Δ the per-row b-bit step), straight-through.
 * DBWA: each weight tensor's stored weights, gradients and AdamW moments are
 * kept at a precision tier by sensitivity — top 25% 16-bit, middle 50%
 * 12-bit, bottom 25% 8-bit — packed with per-block scales and written with
 * stochastic rounding after every update.
 *
 * Every `reprofile_every` steps (and at step 1) the data-free profile of
 * SPEC section 1 is recomputed from the current weights; it re-chooses the
 * TQNI targets and the DBWA tiers, and the choice is logged.
 *
 * What DBWA shrinks here. The AdamW moments exist only packed: the loop
 * builds AdamW without float32 moments and this recipe takes the update
 * tensor by tensor, unpacking m and v into two float32 scratch buffers the
 * size of the largest tensor, running the AdamW kernel, and packing them
 * back. Weights and gradients are rounded to their tier (stochastically) at
 * every update and hold only tier-representable values, but they keep a
 * float32 working copy of the whole model (the arena the forward and
 * backward kernels read): unpacking per layer inside the forward and
 * backward passes is not done. So, per parameter, resident state is 8 bytes
 * of float32 weights + gradients plus the packed moments (16 bytes in plain
 * float32 training), while `state_bytes` accounts weights, gradients and
 * moments all at their packed size; the run's result reports both
 * (`state_bytes`, `state_resident_bytes`) and the process peak RSS.
 */
import type { LlamaModel } from '../models/llama.js';
import { Embedding, Linear } from '../nn/layers.js';
import type { AdamW } from '../optim/adamw.js';
import { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';
import { add, scale } from '../tensor/ops/elementwise.js';
import { profileSettings, profileTensor } from '../swan/profile.js';
import { kurtosisPenalty, SpectralNormTracker, spectralPenalty } from '../sat/regularizers.js';
import { NoiseController, topFraction } from '../sat/noise.js';
import { assignTiers, PackedArray, tierBytes, type PrecisionTier } from '../sat/dbwa.js';
import type { SatConfig } from './config.js';
import { QkdError } from '../errors.js';
import type { SafetensorsFile, TensorToWrite } from '../io/safetensors.js';
import type { MicroBatch, RecipeLoss, TrainRecipe } from './recipe.js';

type Tier = PrecisionTier;

interface SatState {
  rng: ReturnType<Rng['getState']>;
  spectral: unknown;
  targets: string[];
  tiers: [string, Tier][];
  /** DBWA: tier and length of each tensor's packed moments (the bytes are in recipe.safetensors). */
  moments?: [string, Tier, number][];
}

/** Byte accounting of training state: weights + gradients + AdamW m and v. */
export interface StateBytes {
  weights: number;
  gradients: number;
  moments: number;
  total: number;
}

/** Encodes src into `packed` in place when its tier and length still fit, else into a new PackedArray. */
function repack(packed: PackedArray | null, src: Float32Array, tier: Tier, rng: Rng | null): PackedArray {
  if (packed !== null && packed.tier === tier && packed.length === src.length) {
    packed.encodeFrom(src, rng);
    return packed;
  }
  return PackedArray.encode(src, tier, rng);
}

export class SatRecipe implements TrainRecipe {
  readonly name = 'sat';
  private readonly rng: Rng;
  private readonly tracker: SpectralNormTracker;
  private noise: NoiseController | null = null;
  private attachedTo: LlamaModel | null = null;
  /** 2-D weights under the regularisers, by arena name → module name. */
  private weights: { name: string; module: string; tensor: Tensor }[] = [];
  private targets = new Set<string>();
  private tiers = new Map<string, Tier>();
  private restored: SatState | null = null;
  /** DBWA: the AdamW moments of each tensor, packed at its tier (there is no float32 copy). */
  private moments = new Map<string, { m: PackedArray; v: PackedArray }>();
  /** DBWA: reusable packed buffers for rounding weights and gradients to a tier, by `tier:length`. */
  private roundTrip = new Map<string, PackedArray>();
  /** DBWA: float32 scratch for one tensor's moments during the update. */
  private scratch: { m: Float32Array; v: Float32Array } | null = null;
  private readonly notes: string[] = [];
  /** DBWA: the recipe keeps the moments and takes the update (see TrainRecipe.update). */
  readonly update?: (step: number, model: LlamaModel, optimizer: AdamW, lr: number) => void;

  constructor(
    private readonly config: SatConfig,
    seed: number,
  ) {
    this.rng = new Rng(seed + 101);
    this.tracker = new SpectralNormTracker(seed + 103);
    if (config.dbwa.enabled) this.update = (_step, model, optimizer, lr) => this.packedUpdate(model, optimizer, lr);
  }

  /** Notes since the last call (re-profile choices), for the loop's log. */
  takeNotes(): string[] {
    return this.notes.splice(0);
  }

  /** Final figures for the run's result: accounted state bytes. */
  summary(model: LlamaModel): Record<string, number> {
    const b = this.stateBytes(model);
    return { state_bytes: b.total, state_weight_bytes: b.weights, state_gradient_bytes: b.gradients, state_moment_bytes: b.moments, state_resident_bytes: this.residentBytes(model) };
  }

  private attach(model: LlamaModel): void {
    if (this.attachedTo === model) return;
    this.attachedTo = model;
    const byTensor = new Map<Tensor, string>();
    for (const e of model.arena.entries) byTensor.set(e.tensor, e.name);
    const modules: (Linear | Embedding)[] = [];
    this.weights = [];
    for (const m of model.namedModules().values()) {
      if (!(m instanceof Linear) && !(m instanceof Embedding)) continue;
      const name = byTensor.get(m.weight);
      if (name === undefined || this.weights.some((w) => w.name === name)) continue;
      this.weights.push({ name, module: m.name, tensor: m.weight });
      modules.push(m);
    }
    if (this.config.noise.enabled) {
      this.noise = new NoiseController(modules, { bits: this.config.noise.bits, rng: this.rng });
      this.noise.enabled = true;
    }
    if (this.restored) {
      this.rng.setState(this.restored.rng);
      this.tracker.setState(this.restored.spectral);
      this.targets = new Set(this.restored.targets);
      this.tiers = new Map(this.restored.tiers);
      this.noise?.setTargets(new Set(this.weights.filter((w) => this.targets.has(w.name)).map((w) => w.module)));
      this.restored = null;
    }
  }

  /** Data-free profile of every 2-D weight → TQNI targets and DBWA tiers. */
  private reprofile(step: number): void {
    const settings = profileSettings({ probes: 4 });
    const composites = new Map<string, number>();
    this.weights.forEach((w, i) => {
      const p = profileTensor(w.name, w.tensor.shape, w.tensor.data as Float32Array, settings, new Rng(step * 7919 + i));
      composites.set(w.name, p.composite ?? 0);
    });
    if (this.config.noise.enabled) {
      this.targets = topFraction(composites, this.config.noise.top_fraction);
      this.noise?.setTargets(new Set(this.weights.filter((w) => this.targets.has(w.name)).map((w) => w.module)));
      this.notes.push(`step ${step}: re-profiled ${composites.size} weights; TQNI noise on ${[...this.targets].join(', ')}`);
    }
    if (this.config.dbwa.enabled) {
      const uniform = this.config.dbwa.uniform_tier;
      const tiers = uniform !== null ? new Map([...composites.keys()].map((n) => [n, uniform])) : assignTiers(composites);
      const count = (t: Tier) => [...tiers.values()].filter((x) => x === t).length;
      this.notes.push(`step ${step}: DBWA tiers 16-bit ×${count(16)}, 12-bit ×${count(12)}, 8-bit ×${count(8)} (1-D norms: 16-bit)`);
      // 1-D tensors (norm gains) are tiny and not profiled: stored at 16 bits, as in the bf16 baseline.
      for (const e of this.attachedTo?.arena.entries ?? []) if (e.shape.length < 2 && !tiers.has(e.name)) tiers.set(e.name, uniform ?? 16);
      this.tiers = tiers;
    }
  }

  beginStep(step: number, model: LlamaModel): void {
    this.attach(model);
    if (step === 1 || (step - 1) % this.config.reprofile_every === 0) this.reprofile(step);
  }

  loss(model: LlamaModel, batch: MicroBatch): RecipeLoss {
    const task = model.loss(model.forward(batch.inputs, batch.B, batch.T), batch.targets);
    const components: Record<string, number> = { task: task.item() };
    let total = task;
    const c = this.config;
    if (c.kurtosis.enabled && c.kurtosis.weight > 0) {
      const k = kurtosisPenalty(this.weights.map((w) => w.tensor), c.kurtosis.kappa_max);
      components.kurtosis_penalty = k.item();
      total = add(total, scale(k, c.kurtosis.weight));
    }
    if (c.spectral.enabled && c.spectral.weight > 0) {
      const s = spectralPenalty(this.weights.map((w) => ({ name: w.name, weight: w.tensor })), this.tracker, { iterations: c.spectral.iterations });
      components.spectral_penalty = s.item();
      total = add(total, scale(s, c.spectral.weight));
    }
    components.noise_layers = this.noise ? this.targets.size : 0;
    return { loss: total, components };
  }

  /** DBWA: the gradients are rounded to their tensor's tier (stochastically) before the update reads them. */
  beforeUpdate(_step: number, model: LlamaModel): void {
    if (!this.config.dbwa.enabled) return;
    for (const e of model.arena.entries) this.roundToTier(e.tensor.grad as Float32Array, this.tierOf(e.name));
  }

  /**
   * DBWA's update, tensor by tensor: unpack the tensor's moments into the
   * float32 scratch (zeros at the first step), AdamW, pack the moments back
   * at the tensor's current tier (a re-profile may have moved it) and round
   * the new weights to the tier.
   */
  private packedUpdate(model: LlamaModel, optimizer: AdamW, lr: number): void {
    const { c1, c2 } = optimizer.beginUpdate();
    const rng = this.rounding();
    const largest = Math.max(0, ...model.arena.entries.map((e) => e.size));
    if (this.scratch === null || this.scratch.m.length < largest) this.scratch = { m: new Float32Array(largest), v: new Float32Array(largest) };
    for (const e of model.arena.entries) {
      const tier = this.tierOf(e.name);
      const m = this.scratch.m.subarray(0, e.size);
      const v = this.scratch.v.subarray(0, e.size);
      const saved = this.moments.get(e.name);
      if (saved === undefined) {
        m.fill(0);
        v.fill(0);
      } else {
        saved.m.decodeInto(m);
        saved.v.decodeInto(v);
      }
      const w = e.tensor.data as Float32Array;
      optimizer.updateSlice(e, w, e.tensor.grad as Float32Array, m, v, lr, c1, c2);
      this.moments.set(e.name, { m: repack(saved?.m ?? null, m, tier, rng), v: repack(saved?.v ?? null, v, tier, rng) });
      this.roundToTier(w, tier);
    }
  }

  /** Rounds values in place to what `tier` stores (stochastic rounding unless switched off). */
  private roundToTier(values: Float32Array, tier: Tier): void {
    const key = `${tier}:${values.length}`;
    let packed = this.roundTrip.get(key);
    if (packed === undefined) {
      packed = PackedArray.encode(values, tier, this.rounding());
      this.roundTrip.set(key, packed);
    } else {
      packed.encodeFrom(values, this.rounding());
    }
    packed.decodeInto(values);
  }

  private rounding(): Rng | null {
    return this.config.dbwa.stochastic_rounding ? this.rng : null;
  }

  private tierOf(name: string): Tier {
    const tier = this.tiers.get(name);
    if (tier === undefined) throw new QkdError('STATE', `DBWA: no precision tier for '${name}'`, { field: name, hint: 'tiers are assigned at the first step (beginStep)' });
    return tier;
  }

  /** Bytes actually held for training state: float32 weights and gradients (the compute copy) + the moments as stored. */
  private residentBytes(model: LlamaModel): number {
    let bytes = 8 * model.arena.size;
    if (!this.config.dbwa.enabled) return bytes + 8 * model.arena.size;
    for (const { m, v } of this.moments.values()) bytes += m.bytes + v.bytes;
    return bytes;
  }

  /** DBWA's packed moments, saved with each checkpoint (exact resume). */
  checkpointTensors(): TensorToWrite[] {
    const out: TensorToWrite[] = [];
    for (const [name, { m, v }] of this.moments) {
      out.push({ name: `${name}.exp_avg`, dtype: 'u8', shape: [m.bytes], data: m.storage });
      out.push({ name: `${name}.exp_avg_sq`, dtype: 'u8', shape: [v.bytes], data: v.storage });
    }
    return out;
  }

  /** Reads the packed moments saved by checkpointTensors; their tiers and lengths come from the state (setState runs first). */
  restoreTensors(file: SafetensorsFile): void {
    const packed = this.restored?.moments ?? [];
    this.moments = new Map();
    for (const [name, tier, length] of packed) {
      const read = (field: string): PackedArray => {
        const entry = file.entry(`${name}.${field}`);
        if (entry.dtype !== 'u8') throw new QkdError('DTYPE', `tensor '${name}.${field}' has dtype ${entry.dtype}`, { path: file.path, field: `${name}.${field}`, hint: 'U8 (packed DBWA moments)' });
        try {
          return PackedArray.fromStorage(tier, length, file.readBytes(`${name}.${field}`));
        } catch (err) {
          throw new QkdError('SHAPE', `tensor '${name}.${field}': ${(err as Error).message}`, { path: file.path, field: `${name}.${field}` });
        }
      };
      this.moments.set(name, { m: read('exp_avg'), v: read('exp_avg_sq') });
    }
  }

  /**
   * Accounted bytes of weights, gradients and AdamW moments: tiered tensors
   * at their packed size, everything else (1-D norms; all tensors when DBWA
   * is off) as float32.
   */
  stateBytes(model: LlamaModel): StateBytes {
    let weights = 0;
    let gradients = 0;
    let moments = 0;
    for (const e of model.arena.entries) {
      const tier = this.config.dbwa.enabled ? this.tiers.get(e.name) : undefined;
      const one = tier === undefined ? 4 * e.size : tierBytes(e.size, tier);
      weights += one;
      gradients += one;
      moments += 2 * one;
    }
    return { weights, gradients, moments, total: weights + gradients + moments };
  }

  getState(): SatState {
    const moments: [string, Tier, number][] = [...this.moments].map(([name, { m }]) => [name, m.tier, m.length]);
    return { rng: this.rng.getState(), spectral: this.tracker.getState(), targets: [...this.targets], tiers: [...this.tiers.entries()], moments };
  }

  setState(state: unknown): void {
    this.restored = state as SatState;
  }

  detach(): void {
    this.noise?.detach();
    this.noise = null;
    this.attachedTo = null;
  }
}
