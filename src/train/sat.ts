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
 * What DBWA shrinks here: the persistent state between steps (weights and
 * moments) and the gradients live as PackedArrays; the float32 arena, its
 * gradient buffer and the optimiser's moment buffers remain as compute
 * scratch the kernels read (decoded from the packed state each step). The
 * reported `accounted_bytes` counts the packed state; the process peak RSS
 * still includes the float32 scratch, and the docs say so.
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
import type { MicroBatch, RecipeLoss, TrainRecipe } from './recipe.js';

type Tier = PrecisionTier;

interface SatState {
  rng: ReturnType<Rng['getState']>;
  spectral: unknown;
  targets: string[];
  tiers: [string, Tier][];
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
  /** Packed state of each tensor (DBWA). */
  private packed = new Map<string, { w: PackedArray; m: PackedArray; v: PackedArray; g: PackedArray | null }>();
  private readonly notes: string[] = [];

  constructor(
    private readonly config: SatConfig,
    seed: number,
  ) {
    this.rng = new Rng(seed + 101);
    this.tracker = new SpectralNormTracker(seed + 103);
  }

  /** Notes since the last call (re-profile choices), for the loop's log. */
  takeNotes(): string[] {
    return this.notes.splice(0);
  }

  /** Final figures for the run's result: accounted state bytes. */
  summary(model: LlamaModel): Record<string, number> {
    const b = this.stateBytes(model);
    return { state_bytes: b.total, state_weight_bytes: b.weights, state_gradient_bytes: b.gradients, state_moment_bytes: b.moments };
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

  /** DBWA: the gradients are stored at their tensor's tier (and read back for the update). */
  beforeUpdate(_step: number, model: LlamaModel): void {
    if (!this.config.dbwa.enabled) return;
    const rng = this.config.dbwa.stochastic_rounding ? this.rng : null;
    for (const e of model.arena.entries) {
      const tier = this.tiers.get(e.name);
      if (tier === undefined) continue;
      const g = e.tensor.grad as Float32Array;
      const slot = this.slot(e.name);
      slot.g = repack(slot.g, g, tier, rng);
      slot.g.decodeInto(g);
    }
  }

  /** DBWA: weights and AdamW moments are stored at their tier after each update. */
  afterUpdate(_step: number, model: LlamaModel, optimizer: AdamW): void {
    if (!this.config.dbwa.enabled) return;
    const rng = this.config.dbwa.stochastic_rounding ? this.rng : null;
    for (const e of model.arena.entries) {
      const tier = this.tiers.get(e.name);
      if (tier === undefined) continue;
      const w = e.tensor.data as Float32Array;
      const m = optimizer.m.subarray(e.offset, e.offset + e.size) as Float32Array;
      const v = optimizer.v.subarray(e.offset, e.offset + e.size) as Float32Array;
      const slot = this.slot(e.name);
      slot.w = repack(slot.w, w, tier, rng);
      slot.m = repack(slot.m, m, tier, rng);
      slot.v = repack(slot.v, v, tier, rng);
      slot.w.decodeInto(w);
      slot.m.decodeInto(m);
      slot.v.decodeInto(v);
    }
  }

  private slot(name: string): { w: PackedArray; m: PackedArray; v: PackedArray; g: PackedArray | null } {
    let s = this.packed.get(name);
    if (s === undefined) {
      const empty = PackedArray.encode(new Float32Array(0), 16, null);
      s = { w: empty, m: empty, v: empty, g: null };
      this.packed.set(name, s);
    }
    return s;
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
    return { rng: this.rng.getState(), spectral: this.tracker.getState(), targets: [...this.targets], tiers: [...this.tiers.entries()] };
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
