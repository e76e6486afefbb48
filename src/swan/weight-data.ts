/**
 * The shapes the profiler's metric passes share: a weight's values as
 * stored (float32, or raw bf16 bits used without a widened copy), and the
 * probe products the randomised SVD hands to the noise metric.
 */

/** A weight stored as raw bfloat16 bits (the upper halves of float32s), as most checkpoints hold it. */
export interface Bf16Weight {
  readonly bf16: Uint16Array;
}

/** A weight's values: float32, or bf16 used as stored (no widened copy). */
export type WeightData = Float32Array | Bf16Weight;

/** ‖W xᵢ‖² and ‖xᵢ‖² of random probe vectors xᵢ (isotropic directions). */
export interface ProbeProducts {
  wx2: Float64Array;
  x2: Float64Array;
}
