/**
 * Sensitivity-guided distillation (docs/algorithms.md §6): the parts of the SAKD
 * recipe that sit on top of KD+QAT (distill.ts).
 *
 * - SWDL: teacher per-layer composite scores S_l (docs/algorithms.md §1) weight the
 *   feature-KD terms, w = softmax(S/T), T annealed from T_0 to T_min. T = ∞
 *   gives w_l = 1/n exactly, i.e. plain uniform feature KD.
 * - SGR: the SAT kurtosis ceiling and spectral penalties on the student, with
 *   a coefficient per weight that the feedback monitor can raise.
 * - TDNI: b-bit step noise (straight-through) on the student layers aligned
 *   with the teacher's top 20% most sensitive layers.
 * - Feedback: per-weight κ is recorded at every eval; when a penalised
 *   weight's κ (above κ_max) rises at `patience` consecutive evals, its
 *   coefficient is multiplied by `factor` (at most `max_scale` in all) and
 *   the action is logged.
 */
import type { LlamaModel } from '../models/llama.js';
import { weightModules } from '../nn/layers.js';
import { Rng } from '../tensor/random.js';
import { withLoaded, type Tensor } from '../tensor/tensor.js';
import { add, scale } from '../tensor/ops/elementwise.js';
import { excessKurtosis } from '../swan/metrics.js';
import { profileSettings, profileTensor, tensorLayerAndKind } from '../swan/profile.js';
import { kurtosisPenalty, SpectralNormTracker, spectralPenalty } from '../sat/regularizers.js';
import { NoiseController, topFraction } from '../sat/noise.js';
import type { DistillConfig } from './distill-config.js';

/** softmax(S/T); T = ∞ gives exactly 1/n each. */
export function swdlWeights(scores: readonly number[], temperature: number): number[] {
  const n = scores.length;
  if (n === 0) return [];
  if (!Number.isFinite(temperature)) return scores.map(() => 1 / n);
  const m = Math.max(...scores.map((s) => s / temperature));
  const e = scores.map((s) => Math.exp(s / temperature - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

/** Per decoder layer: the mean composite score of its 2-D weights (data-free profile of the model in memory). */
export function layerScores(model: LlamaModel, seed = 1234): number[] {
  const settings = profileSettings({ probes: 4, seed });
  const sums = new Array<number>(model.config.num_hidden_layers).fill(0);
  const counts = new Array<number>(model.config.num_hidden_layers).fill(0);
  model.arena.entries.forEach((e, i) => {
    if (e.shape.length !== 2) return;
    const { layer } = tensorLayerAndKind(e.name);
    if (layer === null) return;
    const p = withLoaded(e.tensor, () => profileTensor(e.name, e.shape, e.tensor.data as Float32Array, settings, new Rng(seed * 1000003 + i)));
    sums[layer]! += p.composite ?? 0;
    counts[layer]!++;
  });
  return sums.map((s, l) => (counts[l]! > 0 ? s / counts[l]! : 0));
}

/** SGR, TDNI and the feedback monitor on one student. */
export class SakdMechanisms {
  private readonly tracker: SpectralNormTracker;
  private readonly rng: Rng;
  private noise: NoiseController | null = null;
  private weights: { name: string; tensor: Tensor }[] = [];
  /** Per-weight coefficient multiplier of the SGR kurtosis term (feedback). */
  readonly coefficient = new Map<string, number>();
  private readonly history = new Map<string, number[]>();
  /** Student module names that get TDNI noise. */
  readonly noisyModules: string[] = [];

  constructor(
    private readonly config: DistillConfig,
    /** Teacher per-layer scores and the student → teacher layer map. */
    private readonly teacherScores: readonly number[],
    private readonly studentToTeacher: readonly number[],
  ) {
    this.tracker = new SpectralNormTracker(config.training.seed + 211);
    this.rng = new Rng(config.training.seed + 223);
  }

  /**
   * The student layers aligned with the teacher's top layers (by score).
   * Student layer j stands for the block of teacher layers
   * [⌊j·Lt/Ls⌋, ⌊(j+1)·Lt/Ls⌋) it replaces (the pruned init copies the first
   * of them, feature KD matches the last), and is noisy when any of them is
   * among the teacher's top `top_fraction`.
   */
  alignedNoisyLayers(): number[] {
    const Lt = this.teacherScores.length;
    const Ls = this.studentToTeacher.length;
    const byLayer = new Map(this.teacherScores.map((s, l) => [String(l), s]));
    const top = topFraction(byLayer, this.config.sakd.tdni.top_fraction);
    const out: number[] = [];
    for (let j = 0; j < Ls; j++) {
      const from = Math.floor((j * Lt) / Ls);
      const to = Math.max(from + 1, Math.floor(((j + 1) * Lt) / Ls));
      for (let t = from; t < to; t++) if (top.has(String(t))) {
        out.push(j);
        break;
      }
    }
    return out;
  }

  attach(student: LlamaModel): void {
    const found = weightModules(student, student.arena);
    const modules = found.map((w) => w.module);
    this.weights = found.map((w) => ({ name: w.name, tensor: w.tensor }));
    for (const w of found) if (!this.coefficient.has(w.name)) this.coefficient.set(w.name, 1);
    const tdni = this.config.sakd.tdni;
    if (tdni.enabled) {
      const layers = new Set(this.alignedNoisyLayers());
      const targets = modules.filter((m) => {
        const { layer } = tensorLayerAndKind(m.name);
        return layer !== null && layers.has(layer);
      });
      this.noisyModules.splice(0, this.noisyModules.length, ...targets.map((m) => m.name));
      this.noise = new NoiseController(targets, { bits: this.config.quantization.bits, rng: this.rng });
      this.noise.setTargets(new Set(this.noisyModules));
      this.noise.enabled = true;
    }
  }

  /** SGR: Σ c_l·max(0, κ_l − κ_max)²·α_κ + α_σ·Σ σ_max/‖W‖_F, and its logged parts. */
  regularizer(): { loss: Tensor | null; components: Record<string, number> } {
    const sgr = this.config.sakd.sgr;
    if (!sgr.enabled) return { loss: null, components: {} };
    let total: Tensor | null = null;
    const components: Record<string, number> = {};
    if (sgr.kurtosis_weight > 0) {
      const k = this.penalty((ws) => kurtosisPenalty(
        ws.map((w) => w.tensor),
        sgr.kappa_max,
        { coefficients: ws.map((w) => this.coefficient.get(w.name)!) },
      ));
      components.sgr_kurtosis = k.item();
      total = scale(k, sgr.kurtosis_weight);
    }
    if (sgr.spectral_weight > 0) {
      const s = this.penalty((ws) => spectralPenalty(ws.map((w) => ({ name: w.name, weight: w.tensor })), this.tracker));
      components.sgr_spectral = s.item();
      const term = scale(s, sgr.spectral_weight);
      total = total === null ? term : add(total, term);
    }
    return { loss: total, components };
  }

  /**
   * A penalty summed over the weights. When the parameters are packed (DBWA
   * storage), each weight is its own graph node, unpacked just while it is
   * computed (the tape unpacks it again for the backward pass).
   */
  private penalty(fn: (weights: { name: string; tensor: Tensor }[]) => Tensor): Tensor {
    if (!this.weights.some((w) => w.tensor.source !== null)) return fn(this.weights);
    let total: Tensor | null = null;
    for (const w of this.weights) {
      const term = withLoaded(w.tensor, () => fn([w]));
      total = total === null ? term : add(total, term);
    }
    return total ?? fn([]);
  }

  /** Feedback monitor at an eval: raises the coefficient of weights whose κ keeps rising above the ceiling. */
  feedback(step: number): string[] {
    const f = this.config.sakd.feedback;
    const sgr = this.config.sakd.sgr;
    if (!f.enabled || !sgr.enabled || sgr.kurtosis_weight === 0) return [];
    const notes: string[] = [];
    for (const w of this.weights) {
      const kappa = withLoaded(w.tensor, () => excessKurtosis(w.tensor.data as Float32Array));
      const h = this.history.get(w.name) ?? [];
      h.push(kappa);
      this.history.set(w.name, h);
      if (kappa <= sgr.kappa_max || h.length < f.patience + 1) continue;
      const recent = h.slice(-(f.patience + 1));
      const rising = recent.every((v, i) => i === 0 || v > recent[i - 1]!);
      const c = this.coefficient.get(w.name)!;
      if (rising && c < f.max_scale) {
        const next = Math.min(f.max_scale, c * f.factor);
        this.coefficient.set(w.name, next);
        notes.push(`step ${step}: κ of ${w.name} rose ${f.patience} checks in a row (${recent.map((v) => v.toFixed(2)).join(' → ')}); SGR coefficient ${c.toFixed(2)} → ${next.toFixed(2)}`);
        h.length = 0;
        h.push(kappa);
      }
    }
    return notes;
  }

  /** κ per weight now (for the metrics log). */
  kurtosisSnapshot(): Record<string, number> {
    return Object.fromEntries(this.weights.map((w) => [w.name, withLoaded(w.tensor, () => excessKurtosis(w.tensor.data as Float32Array))]));
  }

  getState(): unknown {
    return { rng: this.rng.getState(), spectral: this.tracker.getState(), coefficient: [...this.coefficient.entries()], history: [...this.history.entries()] };
  }

  setState(state: unknown): void {
    const s = state as { rng: ReturnType<Rng['getState']>; spectral: unknown; coefficient: [string, number][]; history: [string, number[]][] } | undefined;
    if (!s) return;
    this.rng.setState(s.rng);
    this.tracker.setState(s.spectral);
    for (const [k, v] of s.coefficient) this.coefficient.set(k, v);
    for (const [k, v] of s.history) this.history.set(k, v);
  }

  detach(): void {
    this.noise?.detach();
    this.noise = null;
  }
}
