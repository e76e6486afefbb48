/**
 * A training recipe: what the one training loop (trainer.ts) computes per
 * micro-batch beyond plain next-token cross-entropy. Distillation, KD+QAT,
 * and later SAT/SAKD are recipes; the loop keeps the schedule, accumulation,
 * clipping, validation, metrics and exact-resume checkpoints.
 */
import type { ParameterArena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import type { LlamaModel } from '../models/llama.js';
import type { AdamW } from '../optim/adamw.js';
import type { SafetensorsFile, TensorToWrite } from '../io/safetensors.js';

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
  /** After backward and clipping, before the optimiser update (e.g. store gradients at reduced precision). */
  beforeUpdate?(step: number, model: LlamaModel, optimizer: AdamW): void;
  /** After the optimiser update (e.g. store weights and moments at reduced precision). */
  afterUpdate?(step: number, model: LlamaModel, optimizer: AdamW): void;
  /**
   * When present, the recipe keeps the model's AdamW moments itself (the loop
   * builds the optimiser with `moments: false`, so no float32 moment buffers
   * exist; DBWA also keeps the weights and gradients, packed) and takes the
   * model's update: called instead of `optimizer.update(lr)`, after clipping
   * and `beforeUpdate`.
   */
  readonly update?: (step: number, model: LlamaModel, optimizer: AdamW, lr: number) => void;
  /**
   * When present, the model's gradients are not in its arena (DBWA keeps them
   * packed): the recipe computes their global norm and clips to maxNorm (in
   * its update), returning the norm before clipping. A recipe with `extra`
   * parameters cannot use it (the loop refuses the combination).
   */
  readonly clipGradients?: (model: LlamaModel, maxNorm: number) => number;
  /** Tensors the recipe saves with each checkpoint (in recipe.safetensors), e.g. DBWA's packed weights and moments; read back by restoreTensors on resume. */
  checkpointTensors?(): TensorToWrite[];
  /** null when the checkpoint has no recipe.safetensors (e.g. written without tensors to save). */
  restoreTensors?(file: SafetensorsFile | null): void;
  /**
   * Called after validation at an eval step with the components averaged
   * over the steps since the previous eval. May act (e.g. lower λ) and
   * return extra metrics to log and human-readable notes of what it did.
   */
  afterEval?(step: number, averages: Record<string, number>, model: LlamaModel, validation: Int32Array, validationMask?: Uint8Array): { metrics?: Record<string, number>; notes?: string[] };
  /** Notes produced since the last call (polled after every step and logged). */
  takeNotes?(): string[];
  /** Figures added to the run's result at the end (e.g. accounted memory). */
  summary?(model: LlamaModel): Record<string, number>;
  /** JSON-serialisable state saved in checkpoints (e.g. the current λ). */
  getState?(): unknown;
  setState?(state: unknown): void;
}
