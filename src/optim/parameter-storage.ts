/**
 * Where the trained parameters, their gradients and AdamW moments live
 * during training: a strategy the training loop owns (trainer.ts), chosen
 * by the run's config, not by its recipe. Two exist:
 *  - Float32Storage: the model's arena (float32 weights and gradients) and
 *    AdamW's float32 moments — the default;
 *  - DbwaStorage (sat/dbwa-storage.ts): every tensor packed at a precision
 *    tier by sensitivity (docs/algorithms.md §5).
 * Each sums its gradients over the ranks of a data-parallel run
 * (reduceGradients), so any recipe runs on any storage, on one process or
 * many. The loop's step is: beginStep → micro-batches (backward adds into
 * the storage) → reduceGradients → gradNorm → update.
 */
import { QkdError } from '../errors.js';
import type { SafetensorsFile, TensorToWrite } from '../io/safetensors.js';
import type { ParameterArena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import { kernels } from '../tensor/backend.js';
import { allreduceInBuckets, type World } from '../parallel/world.js';
import { gradNorm, type AdamW } from './adamw.js';

/** Gradient elements per all-reduce call (16 MiB of float32): bounds MPI's temporary buffers. */
export const GRADIENT_BUCKET = 1 << 22;

/** A 2-D weight a storage may treat by sensitivity (the model's Linear and Embedding weights, in module order). */
export interface NamedWeight {
  name: string;
  tensor: Tensor;
}

/** Bytes of training state: weights + gradients + AdamW m and v, as accounted (packed sizes) and as held. */
export interface StorageBytes {
  weights: number;
  gradients: number;
  moments: number;
  total: number;
  /** Bytes actually held, including scratch buffers. */
  resident: number;
}

export interface ParameterStorage {
  readonly kind: 'float32' | 'dbwa';
  /** Whether AdamW keeps float32 moments (false: the storage keeps them, and updates tensor by tensor). */
  readonly float32Moments: boolean;
  /** Start of optimiser step `step` (1-based): every gradient is zero again. */
  beginStep(step: number, arena: ParameterArena, weights: readonly NamedWeight[]): void;
  /** Sums this step's gradients over the ranks (identity for one process). */
  reduceGradients(world: World): void;
  /** L2 norm of this step's gradients. */
  gradNorm(): number;
  /** One AdamW step with every gradient multiplied by `gradScale` (clipping). */
  update(optimizer: AdamW, lr: number, gradScale: number): void;
  /** The values of the parameters, for a data-parallel run's agreement check (empty when they live elsewhere). */
  weightsForDigest(arena: ParameterArena): ArrayBufferView;
  /** JSON state for trainer_state.json (null: nothing to save). */
  getState(): unknown;
  /** Tensors saved with a checkpoint in storage.safetensors (none: no file). */
  checkpointTensors(): TensorToWrite[];
  /** Restores what getState / checkpointTensors saved (file null: the checkpoint has no storage.safetensors). */
  restore(state: unknown, file: SafetensorsFile | null): void;
  bytes(arena: ParameterArena): StorageBytes;
  /** What it chose since the last call (e.g. DBWA's tiers), for the log. */
  takeNotes(): string[];
}

/** The default: float32 weights and gradients in the model's arena, float32 AdamW moments. */
export class Float32Storage implements ParameterStorage {
  readonly kind = 'float32';
  readonly float32Moments = true;
  private arena: ParameterArena | null = null;

  beginStep(_step: number, arena: ParameterArena): void {
    this.arena = arena;
    arena.zeroGrad();
  }
  reduceGradients(world: World): void {
    allreduceInBuckets(world, this.requireArena().grad, GRADIENT_BUCKET);
  }
  gradNorm(): number {
    return gradNorm(this.requireArena().grad);
  }
  update(optimizer: AdamW, lr: number, gradScale: number): void {
    if (gradScale !== 1) {
      const g = this.requireArena().grad;
      kernels().scaleInPlace(g, g.length, gradScale);
    }
    optimizer.update(lr);
  }
  weightsForDigest(arena: ParameterArena): ArrayBufferView {
    return arena.data;
  }
  getState(): unknown {
    return null;
  }
  checkpointTensors(): TensorToWrite[] {
    return [];
  }
  restore(): void {}
  bytes(arena: ParameterArena): StorageBytes {
    const one = 4 * arena.size;
    return { weights: one, gradients: one, moments: 2 * one, total: 4 * one, resident: 4 * one };
  }
  takeNotes(): string[] {
    return [];
  }
  private requireArena(): ParameterArena {
    if (this.arena === null) throw new QkdError('STATE', 'Float32Storage: no step begun yet', { hint: 'beginStep before the first backward' });
    return this.arena;
  }
}
