/**
 * A training recipe: what the one training loop (trainer.ts) computes per
 * micro-batch beyond plain next-token cross-entropy. Distillation, KD+QAT,
 * and later SAT/SAKD are recipes; the loop keeps the schedule, accumulation,
 * clipping, validation, metrics and exact-resume checkpoints, and owns
 * where parameters and gradients live (optim/parameter-storage.ts: float32
 * or DBWA's packed tiers), so a recipe only says what a step computes.
 */
import type { ParameterArena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import type { LlamaModel } from '../models/llama.js';

export interface MicroBatch {
  /** [B, T] input ids and next-token targets. */
  inputs: Int32Array;
  targets: Int32Array;
  /** [B] offset of each row's first input token in the training token stream. */
  starts: Int32Array;
  B: number;
  T: number;
}

export interface RecipeLoss {
  /** The scalar to differentiate. */
  loss: Tensor;
  /** Logged components (plain numbers, e.g. task, distill, quant, lambda). */
  components: Record<string, number>;
}

export interface TrainRecipe {
  readonly name: string;
  /** Extra trainable parameters (e.g. feature projections), optimised and checkpointed with the model. */
  readonly extra?: ParameterArena;
  /** Called once at the start of every optimiser step (1-based), before its micro-batches, with the model being trained. */
  beginStep?(step: number, model: LlamaModel): void;
  loss(model: LlamaModel, batch: MicroBatch, step: number): RecipeLoss;
  /**
   * Called after validation at an eval step with the components averaged
   * over the steps since the previous eval. May act (e.g. lower λ) and
   * return extra metrics to log and human-readable notes of what it did.
   */
  afterEval?(step: number, averages: Record<string, number>, model: LlamaModel, validation: Int32Array, validationMask?: Uint8Array): { metrics?: Record<string, number>; notes?: string[] };
  /** Notes produced since the last call (polled after every step and logged). */
  takeNotes?(): string[];
  /** JSON-serialisable state saved in checkpoints (e.g. the current λ). */
  getState?(): unknown;
  setState?(state: unknown): void;
}
