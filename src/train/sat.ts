/**
 * Sensitivity-aware training (docs/algorithms.md §5) as a recipe of the one
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
 * docs/algorithms.md §1 is recomputed from the current weights; it re-chooses the
 * TQNI targets and the DBWA tiers, and the choice is logged.
 *
 * DBWA memory: at the first step the model's parameters move into a
 * PackedParameterStore (sat/packed-store.ts) and the float32 arena is
 * released. Weights, gradients and moments then exist only packed; layers
 * and the tape unpack one weight at a time into float32 scratch, and this
 * recipe takes clipping and the AdamW update (TrainRecipe.clipGradients /
 * update), tensor by tensor. The penalties are then computed per weight so
 * that only one weight is unpacked at a time. The run's result reports the
 * accounted packed bytes (`state_bytes`), the bytes held by the store
 * including the update's scratch (`state_resident_bytes`; the pooled load
 * buffers are not counted) and the process peak RSS.
 */
import type { LlamaModel } from '../models/llama.js';
import { weightModules } from '../nn/layers.js';
import type { AdamW } from '../optim/adamw.js';
import { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';
import { add, scale } from '../tensor/ops/elementwise.js';
import { profileSettings, profileTensor } from '../swan/profile.js';
import { kurtosisPenalty, SpectralNormTracker, spectralPenalty } from '../sat/regularizers.js';
import { NoiseController, topFraction } from '../sat/noise.js';
import { assignTiers, tierBytes, type PrecisionTier } from '../sat/dbwa.js';
import { PackedParameterStore, restorePackedState, type PackedStoreLayout } from '../sat/packed-store.js';
import { withLoaded } from '../tensor/tensor.js';
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
  /** DBWA: tier and length of each parameter's packed state (the bytes are in recipe.safetensors). */
  packed?: PackedStoreLayout;
}

/** Byte accounting of training state: weights + gradients + AdamW m and v. */
export interface StateBytes {
  weights: number;
  gradients: number;
  moments: number;
  total: number;
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
  /** DBWA: where every parameter lives (packed) once training starts; null before the first step or without DBWA. */
  private store: PackedParameterStore | null = null;
  /** DBWA on resume: the packed weights and moments read from the checkpoint, until the store takes them. */
  private savedPacked: ReturnType<typeof restorePackedState> | null = null;
  /** DBWA on resume: the checkpoint's state says packed tensors exist (restoreTensors must have read them). */
  private expectPacked = false;
  /** DBWA: the clipping factor for this step's gradients (set by clipGradients). */
  private gradScale = 1;
  private readonly notes: string[] = [];
  /** DBWA: the recipe keeps the parameters, gradients and moments and takes clipping and the update (see TrainRecipe). */
  readonly update?: (step: number, model: LlamaModel, optimizer: AdamW, lr: number) => void;
  readonly clipGradients?: (model: LlamaModel, maxNorm: number) => number;

  constructor(
    private readonly config: SatConfig,
    seed: number,
  ) {
    this.rng = new Rng(seed + 101);
    this.tracker = new SpectralNormTracker(seed + 103);
    if (config.dbwa.enabled) {
      this.update = (_step, _model, optimizer, lr) => this.requireStore().update(optimizer, lr, this.gradScale);
      this.clipGradients = (_model, maxNorm) => {
        const norm = this.requireStore().gradNorm();
        this.gradScale = norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
        return norm;
      };
    }
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
    this.store = null; // a store belongs to one model's parameters
    const found = weightModules(model, model.arena);
    this.weights = found.map((w) => ({ name: w.name, module: w.module.name, tensor: w.tensor }));
    if (this.config.noise.enabled) {
      this.noise = new NoiseController(found.map((w) => w.module), { bits: this.config.noise.bits, rng: this.rng });
      this.noise.enabled = true;
    }
    if (this.restored) {
      this.expectPacked = this.config.dbwa.enabled && (this.restored.packed?.length ?? 0) > 0;
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
      const p = withLoaded(w.tensor, () => profileTensor(w.name, w.tensor.shape, w.tensor.data as Float32Array, settings, new Rng(step * 7919 + i)));
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
      this.notes.push(`step ${step}: DBWA tiers 16-bit ×${count(16)}, 12-bit ×${count(12)}, 8-bit ×${count(8)} (1-D norms: ${uniform ?? 16}-bit)`);
      // 1-D tensors (norm gains) are tiny and not profiled: stored at 16 bits, as in the bf16 baseline.
      for (const e of this.attachedTo?.arena.entries ?? []) if (e.shape.length < 2 && !tiers.has(e.name)) tiers.set(e.name, uniform ?? 16);
      this.tiers = tiers;
      this.store?.setTiers(tiers);
    }
  }

  beginStep(step: number, model: LlamaModel): void {
    this.attach(model);
    // On resume the store comes back at the checkpoint's tiers first, so that a re-profile at this step moves it as in an uninterrupted run.
    if (this.config.dbwa.enabled && this.store === null && this.savedPacked !== null) this.openStore(model);
    if (step === 1 || (step - 1) % this.config.reprofile_every === 0) this.reprofile(step);
    if (this.config.dbwa.enabled) {
      // A new run's first step packs the model (at the tiers just chosen) and drops its float32 arena.
      if (this.store === null) this.openStore(model);
      this.store!.zeroGrad();
    }
  }

  private openStore(model: LlamaModel): void {
    if (this.expectPacked && this.savedPacked === null) {
      throw new QkdError('IO', 'DBWA: the checkpoint has no recipe.safetensors with the packed weights and moments', { hint: 'a checkpoint written by qkd train with sat.dbwa enabled' });
    }
    this.store = new PackedParameterStore(model.arena, this.tiers, () => this.rounding(), this.savedPacked);
    this.savedPacked = null;
    this.expectPacked = false;
  }

  private requireStore(): PackedParameterStore {
    if (this.store === null) throw new QkdError('STATE', 'DBWA: no packed parameter store yet', { hint: 'beginStep runs before the first update' });
    return this.store;
  }

  /**
   * A penalty summed over the weights. With DBWA each weight is its own
   * graph node, loaded just while it is computed (one float32 copy at a time).
   */
  private penalty(fn: (weights: { name: string; tensor: Tensor }[]) => Tensor): Tensor {
    if (this.store === null) return fn(this.weights);
    let total: Tensor | null = null;
    for (const w of this.weights) {
      const term = withLoaded(w.tensor, () => fn([w]));
      total = total === null ? term : add(total, term);
    }
    return total ?? fn([]);
  }

  loss(model: LlamaModel, batch: MicroBatch): RecipeLoss {
    const task = model.loss(model.forward(batch.inputs, batch.B, batch.T), batch.targets);
    const components: Record<string, number> = { task: task.item() };
    let total = task;
    const c = this.config;
    if (c.kurtosis.enabled && c.kurtosis.weight > 0) {
      const k = this.penalty((ws) => kurtosisPenalty(ws.map((w) => w.tensor), c.kurtosis.kappa_max));
      components.kurtosis_penalty = k.item();
      total = add(total, scale(k, c.kurtosis.weight));
    }
    if (c.spectral.enabled && c.spectral.weight > 0) {
      const s = this.penalty((ws) => spectralPenalty(ws.map((w) => ({ name: w.name, weight: w.tensor })), this.tracker, { iterations: c.spectral.iterations }));
      components.spectral_penalty = s.item();
      total = add(total, scale(s, c.spectral.weight));
    }
    components.noise_layers = this.noise ? this.targets.size : 0;
    return { loss: total, components };
  }

  private rounding(): Rng | null {
    return this.config.dbwa.stochastic_rounding ? this.rng : null;
  }

  /** Bytes held for training state: the packed store with its update scratch (DBWA), else float32 w + g + m + v. */
  private residentBytes(model: LlamaModel): number {
    return this.store === null ? 16 * model.arena.size : this.store.residentBytes();
  }

  /** DBWA's packed weights and moments, saved with each checkpoint (exact resume). */
  checkpointTensors(): TensorToWrite[] {
    return (this.store?.checkpointBytes() ?? []).map(({ name, bytes }) => ({ name, dtype: 'u8' as const, shape: [bytes.length], data: bytes }));
  }

  /** Reads what checkpointTensors saved (null: the checkpoint has no recipe.safetensors); the layout comes from the state (setState runs first). */
  restoreTensors(file: SafetensorsFile | null): void {
    const layout = this.restored?.packed;
    if (file === null || !this.config.dbwa.enabled || layout === undefined) return;
    this.savedPacked = restorePackedState(layout, (name) => {
      const entry = file.entry(name);
      if (entry.dtype !== 'u8') throw new QkdError('DTYPE', `tensor '${name}' has dtype ${entry.dtype}`, { path: file.path, field: name, hint: 'U8 (packed DBWA state)' });
      return file.readBytes(name);
    }, file.path);
  }

  /**
   * Accounted bytes of weights, gradients and AdamW moments: with DBWA every
   * tensor at its tier's packed size (the 1-D norm gains at 16 bits, or at
   * `uniform_tier`); without DBWA all as float32.
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
    return { rng: this.rng.getState(), spectral: this.tracker.getState(), targets: [...this.targets], tiers: [...this.tiers.entries()], packed: this.store?.layout() };
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
