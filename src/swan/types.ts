/**
 * The data-free sensitivity profile (docs/algorithms.md §1) as plain data: what
 * `qkd audit --json` writes and what the HTML report and the bit allocator
 * read. Field names are part of the public JSON format.
 */

/** Normalised scores s ∈ [0, 1] of the four metrics. */
export interface MetricScores {
  kurtosis: number;
  spectral_concentration: number;
  noise_amplification: number;
  reconstruction_error: number;
}

/**
 * The route a weight's spectrum took: the exact eigenvalues of its Gram
 * matrix, the block Krylov pass (its block width, the depth it reached:
 * the one asked for, raised when the block was rounded to whole GEMM
 * panels, or less when the space stopped growing; the dimensions of the
 * subspace it built, and what the products ran on: docs/algorithms.md §1),
 * or none for a zero weight.
 */
export type SpectrumMethod =
  | { route: 'exact' | 'none' }
  | { route: 'krylov'; block: number; depth: number; dimensions: number; products: 'int8' | 'bf16' | 'f32' };

export interface TensorProfile {
  /** Tensor name as stored in the model file (Hugging Face names for qkd checkpoints). */
  name: string;
  /** [rows, cols] = [out, in] for weights; 1-D tensors have one entry. */
  shape: number[];
  /** Excess kurtosis κ = m4/σ⁴ − 3 over all entries (float64 accumulation). */
  kurtosis: number;
  /** Σ top-10% σ_i² / ‖W‖_F². null for 1-D tensors. */
  spectral_concentration: number | null;
  /** σ_max / ‖W‖_F. null for 1-D tensors. */
  sigma_max_over_fro: number | null;
  /** mean_k ‖E x_k‖ / ‖W x_k‖ (E at the b-bit per-row step). null for 1-D tensors. */
  noise_amplification: number | null;
  /** ‖Q_b(W) − W‖_F / ‖W‖_F, b-bit per-output-channel asymmetric RTN. null for 1-D tensors. */
  reconstruction_error: number | null;
  /**
   * How the singular values were taken; null for 1-D tensors (absent in
   * reports from before it was recorded).
   */
  spectrum?: SpectrumMethod | null;
  /** Normalised scores; null for 1-D tensors (not quantized). */
  scores: MetricScores | null;
  /** Σ_j α_j s_j; null for 1-D tensors. */
  composite: number | null;
  /** Decoder layer index parsed from the name, or null (embeddings, head, norms). */
  layer: number | null;
  /** Short tensor kind, e.g. 'q_proj', 'down_proj', 'embed_tokens'. */
  kind: string;
}

/** Weights α_j of the composite and the score references (docs/algorithms.md §1). */
export interface ProfileSettings {
  bits: number;
  probes: number;
  /** Rank cap of the randomised SVD. */
  maxRank: number;
  /** Block-Krylov depth of the randomised SVD (passes ≈ 2·depth + 2). */
  krylovDepth: number;
  /**
   * Krylov subspace dimensions per singular value wanted (default 0.7):
   * the products scale with it; lower is faster and more random.
   */
  krylovDimensions: number;
  /**
   * What the Krylov products run on: 'int8' (docs/algorithms.md §1, "Int8
   * products"), 'bf16' (the bf16 GEMM), or 'auto' (int8 where the CPU has
   * AVX-512 VNNI, else bf16).
   */
  products: 'auto' | 'int8' | 'bf16';
  seed: number;
  weights: MetricScores;
  /** Score references: a_ref and e_ref of docs/algorithms.md §1. */
  noiseRef: number;
  errorRef: number;
}

export interface AuditReport {
  model: string;
  /** Total parameters over all tensors profiled (1-D included). */
  params: number;
  seconds: number;
  settings: ProfileSettings;
  tensors: TensorProfile[];
}
