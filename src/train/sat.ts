/**
 * Sensitivity-aware training (docs/algorithms.md §5) as a recipe of the one
 * training loop: `qkd train --recipe sat`.
 *
 *   L = L_task + α_κ · Σ_l max(0, κ_l − κ_max)²        (KDS, kurtosis ceiling)
 *              + α_σ · Σ_l σ_max(W_l) / ‖W_l‖_F         (SC, power iteration)
 * TQNI: the 2-D weights in the top 20% of the current composite score are
 * used as W + U(−Δ/2, Δ/2) (Δ the per-row b-bit step), straight-through.
 * Every `reprofile_every` steps (and at step 1) the data-free profile of
 * docs/algorithms.md §1 is recomputed from the current weights; it re-chooses
 * the TQNI targets, and the choice is logged.
 *
 * DBWA (`sat.dbwa`: weights, gradients and moments packed at precision
 * tiers by sensitivity) is not part of this recipe: it is a parameter
 * storage the training loop owns (sat/dbwa-storage.ts), so it also runs
 * under other recipes. When the model's parameters are packed, the
 * penalties here are computed per weight so that only one weight is
 * unpacked at a time.
 */
import type { LlamaModel } from '../models/llama.js';
import { weightModules } from '../nn/layers.js';
import { Rng } from '../tensor/random.js';
import type { Tensor } from '../tensor/tensor.js';
import { add, scale } from '../tensor/ops/elementwise.js';
import { profileSettings, profileTensor } from '../swan/profile.js';
import { kurtosisPenalty, SpectralNormTracker, spectralPenalty } from '../sat/regularizers.js';
import { NoiseController, topFraction } from '../sat/noise.js';
import { withLoaded } from '../tensor/tensor.js';
import type { SatConfig } from './config.js';
import type { MicroBatch, RecipeLoss, TrainRecipe } from './recipe.js';

interface SatState {
  rng: ReturnType<Rng['getState']>;
  spectral: unknown;
  targets: string[];
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
  private restored: SatState | null = null;
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

  private attach(model: LlamaModel): void {
    if (this.attachedTo === model) return;
    this.attachedTo = model;
    const found = weightModules(model, model.arena);
    this.weights = found.map((w) => ({ name: w.name, module: w.module.name, tensor: w.tensor }));
    if (this.config.noise.enabled) {
      this.noise = new NoiseController(found.map((w) => w.module), { bits: this.config.noise.bits, rng: this.rng });
      this.noise.enabled = true;
    }
    if (this.restored) {
      this.rng.setState(this.restored.rng);
      this.tracker.setState(this.restored.spectral);
      this.targets = new Set(this.restored.targets);
      this.noise?.setTargets(new Set(this.weights.filter((w) => this.targets.has(w.name)).map((w) => w.module)));
      this.restored = null;
    }
  }

  /** Data-free profile of every 2-D weight → TQNI targets. */
  private reprofile(step: number): void {
    const settings = profileSettings({ probes: 4 });
    const composites = new Map<string, number>();
    this.weights.forEach((w, i) => {
      const p = withLoaded(w.tensor, () => profileTensor(w.name, w.tensor.shape, w.tensor.data as Float32Array, settings, new Rng(step * 7919 + i)));
      composites.set(w.name, p.composite ?? 0);
    });
    this.targets = topFraction(composites, this.config.noise.top_fraction);
    this.noise?.setTargets(new Set(this.weights.filter((w) => this.targets.has(w.name)).map((w) => w.module)));
    this.notes.push(`step ${step}: re-profiled ${composites.size} weights; TQNI noise on ${[...this.targets].join(', ')}`);
  }

  beginStep(step: number, model: LlamaModel): void {
    this.attach(model);
    if (this.config.noise.enabled && (step === 1 || (step - 1) % this.config.reprofile_every === 0)) this.reprofile(step);
  }

  /**
   * A penalty summed over the weights. When the parameters are packed
   * (DBWA storage), each weight is its own graph node, loaded just while it
   * is computed (one float32 copy at a time).
   */
  private penalty(model: LlamaModel, fn: (weights: { name: string; tensor: Tensor }[]) => Tensor): Tensor {
    if (!model.arena.released) return fn(this.weights);
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
      const k = this.penalty(model, (ws) => kurtosisPenalty(ws.map((w) => w.tensor), c.kurtosis.kappa_max));
      components.kurtosis_penalty = k.item();
      total = add(total, scale(k, c.kurtosis.weight));
    }
    if (c.spectral.enabled && c.spectral.weight > 0) {
      const s = this.penalty(model, (ws) => spectralPenalty(ws.map((w) => ({ name: w.name, weight: w.tensor })), this.tracker, { iterations: c.spectral.iterations }));
      components.spectral_penalty = s.item();
      total = add(total, scale(s, c.spectral.weight));
    }
    components.noise_layers = this.noise ? this.targets.size : 0;
    return { loss: total, components };
  }

  getState(): SatState {
    return { rng: this.rng.getState(), spectral: this.tracker.getState(), targets: [...this.targets] };
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
