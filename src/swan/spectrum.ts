/**
 * Top singular values of a weight matrix by randomised block Krylov
 * iteration (the randomised SVD of docs/algorithms.md §1 with a Krylov subspace in
 * place of plain subspace iteration), with every O(m·n·b) product on the
 * backend's GEMM. Used for the spectral-concentration metric.
 *
 * View W [m, n] as A [M, N] with M ≥ N (A = W, or Wᵀ for a wide W) and
 * G = AᵀA. From a random orthonormal block Q₀ [N, b] the method builds
 *   span{Q₀, G Q₀, …, G^q Q₀}
 * one block at a time (Y = Aᵀ(A Qⱼ), orthogonalised against every earlier
 * block, orthonormalised), then takes the Ritz values of G on it: the
 * eigenvalues of H = Qᵀ G Q for the whole basis Q [N, (q+1)·b], which are
 * the σᵢ² estimates (from below). 2(q+1) passes over W. The spectral
 * summary reads the top-10% energy from H by deflated Gauss quadrature
 * (swan/quadrature.ts), which needs far fewer dimensions than the Ritz
 * sum did.
 *
 * Why Krylov: for a fixed number of passes the Krylov space is q+1 times
 * wider than the subspace-iteration block and contains its polynomial, so
 * the top-10% energy of flat (Gaussian-like) spectra, where subspace
 * iteration converges slowest, comes out more accurately from fewer flops:
 * on 1024×1024 Gaussian weights, b = 32 and q = 8 (18 passes of 32 columns)
 * are within 0.01 of the exact concentration, where subspace iteration with
 * a 2k-wide sketch and 2 power steps (5 passes of 206 columns) was 0.015 off.
 *
 * Weights stored as bfloat16 are multiplied as stored (kernels().bf16Gemm):
 * the thin block is rounded to bf16, products are exact and summed in
 * float32. H = Qᵀ·Y pairs the float32 basis with products of its rounded
 * copy; the rounding (relative 2⁻⁹ per entry, uncorrelated with W) moves the
 * estimates by ~1e-4 relative, far below the method's own error.
 */
import { QkdError } from '../errors.js';
import { adviseHugePages, kernels } from '../tensor/backend.js';
import { fromBf16 } from '../tensor/dtype.js';
import { Rng } from '../tensor/random.js';
import { int8Stride } from '../tensor/reference/int8-gemm.js';
import { cholesky, invertLower, symmetricEigenvalues } from './linalg.js';
import { quadratureTopSum } from './quadrature.js';
import { weightStatistics } from './metrics.js';
import type { ProbeProducts, WeightData } from './weight-data.js';
import type { SpectrumMethod } from './types.js';

export interface SpectrumOptions {
  /** Rank cap k of the estimate (docs/algorithms.md §1: k ≤ 256). */
  maxRank?: number;
  /**
   * Krylov depth q (default 8): the subspace holds G⁰..G^q applied to the
   * start block, 2(q+1) passes over W. The block width b follows from it
   * (the subspace gets about dimensionsPerRank·k dimensions; a wide W takes
   * one pass more).
   */
  depth?: number;
  /**
   * Krylov dimensions per singular value wanted (default 0.7, 0.25 to 16):
   * the subspace gets about this many times k dimensions (blocks at least
   * MIN_BLOCK wide), and the products scale with it. Lower is faster, and
   * the quadrature's estimate more random (docs/algorithms.md §1,
   * "Spectral concentration").
   */
  dimensionsPerRank?: number;
  /**
   * Also return ‖W x‖² for this many random unit probes x (the noise
   * metric's W x, metrics.noiseFromProbes), taken from the first pass.
   */
  probes?: number;
  /**
   * Multiply a float32 weight in float32 (the SGEMM). Default false: it is
   * rounded to bf16 once and takes the bf16 GEMM, twice the multiply rate;
   * the rounding (2⁻⁹ relative per entry) moves the estimates by ~1e-5,
   * and weights read from bf16 checkpoints round back exactly.
   */
  exactProducts?: boolean;
  /**
   * Multiply the Krylov steps' Aᵀ(A·x) on int8 (kernels().int8Gemm): the
   * weight quantized once per tensor (one scale per row of A), each block
   * per column with its values beyond 6 rms kept in float32. Default: where
   * the kernel has its fast path (AVX-512 VNNI), unless exactProducts.
   * Either way a weight whose int8 copy is further than INT8_MAX_ERROR from
   * it (relative squared error), or with a side that is not a multiple of
   * 4, stays on bf16; by default so does one larger than INT8_MAX_VALUES. docs/algorithms.md §1
   * gives the accuracy.
   */
  int8?: boolean;
  /** Seeded generator for the random start block (and probes). */
  rng: Rng;
  /** Force a route (default: spectrumRoute's choice by cost). */
  route?: 'gram' | 'krylov';
}

export type { ProbeProducts } from './weight-data.js';

export interface SpectrumSummary {
  /** Σ of the top-r σ_i² / ‖W‖_F², r = ceil(0.1 · min(m, n)). */
  concentration: number;
  /** σ_max / ‖W‖_F. */
  sigmaMaxOverFro: number;
  /** r: how many singular values the top 10% holds. */
  topCount: number;
  /** True when the exact route's r exceeded the rank cap and the tail of the top 10% was estimated (the Krylov route's quadrature counts all r). */
  estimatedTail: boolean;
  /** The probe products when `probes` was asked for (else null). */
  probes: ProbeProducts | null;
  /** How the singular values were taken. */
  method: SpectrumMethod;
}

export type { SpectrumMethod } from './types.js';

/** The Krylov subspace gets about this many dimensions per singular value wanted (SpectrumOptions.dimensionsPerRank). */
const DIMENSIONS_PER_RANK = 0.7;
const DEFAULT_DEPTH = 8;
/** Weights above this size take Aᵀ(A·x) in row slices of about this many bytes (a slice stays in L3). */
const GRAM_CHUNK_BYTES = 4 << 20;
/**
 * A new direction is kept while its part orthogonal to the basis is at
 * least this fraction of its norm (squared: 1e-3 relative length); below it
 * the Krylov space has (numerically) stopped growing in that direction —
 * for bf16 weights it is within the rounding of the products (2⁻⁹).
 */
const DROP_TOLERANCE = 1e-6;
/**
 * Orthogonalisation against the basis is repeated when a column kept less
 * than this share of its squared length: one float32 pass leaves the new
 * direction about ε·‖y‖/‖z‖ (times the rounding growth of the products) out
 * of orthogonal. The textbook "twice is enough" test, at 1/2, would redo
 * almost every Krylov block (most of a new block lies in the old span).
 */
const REORTHOGONALIZE = 0.1;
/**
 * One pass of block Gram–Schmidt also carries the basis's own loss of
 * orthogonality into the new block, multiplied by the cancellation
 * κ = ‖y‖/‖z‖: Qᵀz = (I − QᵀQ)·Qᵀy, and Qᵀy is large only on the last two
 * blocks. So the new block's loss is at most about (max(ℓⱼ, ℓⱼ₋₁) + ε)·κ,
 * with ℓ the loss of the blocks it was built from: it grows geometrically
 * (×2–3 a step on a tall Gaussian weight), and past about 20 steps the basis
 * is no longer orthogonal and H has ghost copies of its top eigenvalues
 * (σ_max three times too large at depth 35, docs/algorithms.md §1). The pass
 * is repeated when that estimate passes ORTHOGONALITY_LOSS; a repeated pass
 * leaves about ε. The estimate runs about 10× above the measured loss.
 * Ritz values move by about the loss times λ_max: the concentration by at
 * most about r·σ_max²/‖W‖²_F times it (0.2 on a Gaussian 8192×2048), far
 * inside the method's own error.
 */
const ORTHOGONALITY_LOSS = 1e-3;
/**
 * The loss ε of one float32 Gram–Schmidt pass on a well-cancelled block
 * (measured 3e-7 at a short side of 2,048; taken larger to stay on the safe side).
 */
const PASS_LOSS = 1e-6;

/**
 * The narrowest start block: its b directions are the samples the
 * quadrature (swan/quadrature.ts) averages over, and with a few of them
 * the estimate of a decaying spectrum scatters (one direction: 0.06 off on
 * a 200 × 160 weight).
 */
const MIN_BLOCK = 16;

/** Block width b and depth q for k singular values of a matrix whose short side is N. */
export function krylovShape(k: number, N: number, depth = DEFAULT_DEPTH, perRank = DIMENSIONS_PER_RANK): { blockSize: number; depth: number } {
  const dimensions = Math.min(N, Math.ceil(perRank * k));
  const raw = dimensions / (depth + 1);
  // Whole GEMM panels: 32 columns (the bf16 micro-kernel's width), else 8; at least MIN_BLOCK, whose rows of H's
  // eigenvectors are the quadrature's samples (swan/quadrature.ts).
  let b = raw >= 24 ? Math.max(32, Math.round(raw / 32) * 32) : Math.max(MIN_BLOCK, Math.floor(raw / 8) * 8);
  b = Math.min(b, N);
  // No deeper than the blocks the short side holds (the pass stops at N columns anyway).
  return { blockSize: b, depth: Math.min(Math.max(depth, Math.ceil(dimensions / b) - 1), Math.ceil(N / b) - 1) };
}

/** W as the operator A (M ≥ N) and its transpose, on the backend's GEMMs. */
class WeightOperator {
  readonly M: number;
  readonly N: number;
  readonly bf16: boolean;

  constructor(
    private readonly w: WeightData,
    readonly rows: number,
    readonly cols: number,
  ) {
    this.bf16 = !(w instanceof Float32Array);
    this.M = Math.max(rows, cols);
    this.N = Math.min(rows, cols);
  }

  get tall(): boolean {
    return this.rows >= this.cols;
  }

  /** out [M, width] (ld outLd) = A · x, x [N, width] (ld xLd). */
  apply(x: Float32Array, xLd: number, width: number, out: Float32Array, outLd: number): void {
    // A = W: W·x (W not transposed). A = Wᵀ: Wᵀ·x.
    this.multiply(!this.tall, x, xLd, width, out, outLd);
  }

  /** out [N, width] = Aᵀ · u, u [M, width]. */
  applyTransposed(u: Float32Array, uLd: number, width: number, out: Float32Array, outLd: number): void {
    this.multiply(this.tall, u, uLd, width, out, outLd);
  }

  /**
   * out [N, width] = Aᵀ(A·x), using u [M, width] as scratch; returns
   * ‖(A·x)_i‖² of the first `probeCount` columns. A weight bigger than
   * GRAM_CHUNK_BYTES goes through in slices of A's rows, each used for
   * both products while it is still in cache: W is read from memory once
   * per Krylov step instead of twice.
   */
  applyGram(x: Float32Array, xLd: number, width: number, out: Float32Array, outLd: number, u: Float32Array, probeCount: number): Float64Array {
    const norms = new Float64Array(probeCount);
    const bytes = (this.bf16 ? 2 : 4) * this.M * this.N;
    const chunks = Math.max(1, Math.ceil(bytes / GRAM_CHUNK_BYTES));
    const step = Math.ceil(this.M / chunks);
    for (let r0 = 0; r0 < this.M; r0 += step) {
      const r1 = Math.min(this.M, r0 + step);
      // Rows [r0, r1) of A: rows of W (tall) or columns of W (wide).
      const offset = this.tall ? r0 * this.cols : r0;
      const rows = r1 - r0;
      const other = this.N;
      // u = A[r0:r1] · x, then out (+)= A[r0:r1]ᵀ · u.
      this.product(!this.tall, offset, this.tall ? rows : other, this.tall ? other : rows, x, xLd, width, u, width, false);
      for (let i = 0; i < rows; i++) for (let j = 0; j < probeCount; j++) norms[j]! += u[i * width + j]! ** 2;
      this.product(this.tall, offset, this.tall ? rows : other, this.tall ? other : rows, u, width, width, out, outLd, r0 > 0);
    }
    return norms;
  }

  /** W·x (transW false, x [cols, width]) or Wᵀ·x (x [rows, width]). */
  private multiply(transW: boolean, x: Float32Array, xLd: number, width: number, out: Float32Array, outLd: number): void {
    this.product(transW, 0, this.rows, this.cols, x, xLd, width, out, outLd, false);
  }

  /**
   * The block of W starting at element `offset` with wRows × wCols entries
   * (row stride cols), times x: out (+)= op(block)·x, op = ᵀ when transW.
   */
  private product(transW: boolean, offset: number, wRows: number, wCols: number, x: Float32Array, xLd: number, width: number, out: Float32Array, outLd: number, accumulate: boolean): void {
    if (width === 0) return;
    const M = transW ? wCols : wRows;
    const K = transW ? wRows : wCols;
    if (this.w instanceof Float32Array) {
      kernels().sgemm({ batch: 1, transA: transW, transB: false, M, N: width, K, alpha: 1, a: this.w.subarray(offset), lda: this.cols, strideA: 0, b: x, ldb: xLd, strideB: 0, beta: accumulate ? 1 : 0, c: out, ldc: outLd, strideC: 0 });
    } else {
      kernels().bf16Gemm({ transA: transW, M, N: width, K, a: this.w.bf16.subarray(offset), lda: this.cols, b: x, ldb: xLd, c: out, ldc: outLd, accumulate });
    }
  }
}

/**
 * The int8 copy of a bf16 weight (kernels().int8Quantize), one scale per row
 * of A: per row of W when it is tall, per column when it is wide. Its
 * applyGram runs both products of a Krylov step on kernels().int8Gemm: first
 * u = A·x with the scales applied to u's rows, then Aᵀ·u with the scales
 * folded into u's rows (the sum runs over A's rows). The two quad layouts
 * give each product its summed index in the vector lanes.
 */
class Int8Weight {
  private constructor(
    private readonly rows: number,
    private readonly cols: number,
    private readonly byRows: Uint8Array,
    private readonly byCols: Uint8Array,
    private readonly scales: Float32Array,
  ) {}

  /** The int8 copy, or null when it is further than INT8_MAX_ERROR from W. */
  static of(w: Uint16Array, rows: number, cols: number): Int8Weight | null {
    const tall = rows >= cols;
    const byRows = workspace.uint8(0, rows * int8Stride(cols));
    const byCols = workspace.uint8(1, cols * int8Stride(rows));
    const scales = new Float32Array(tall ? rows : cols);
    const error = kernels().int8Quantize(w, rows, cols, tall, byRows, byCols, scales);
    if (!(error >= 0 && error <= INT8_MAX_ERROR)) return null;
    return new Int8Weight(rows, cols, byRows, byCols, scales);
  }

  /** out [N, width] = Aᵀ(A·x), with u [M, width] as scratch. */
  applyGram(x: Float32Array, xLd: number, width: number, out: Float32Array, outLd: number, u: Float32Array): void {
    const { rows, cols, scales } = this;
    const k = kernels();
    // A·x: a tall W sums over its columns (byCols), a wide one over its rows (byRows); Aᵀ·u the other way.
    const first = rows >= cols ? k.int8Gemm(this.byCols, int8Stride(rows), rows, width, cols, null, x, xLd, scales, u, width) : k.int8Gemm(this.byRows, int8Stride(cols), cols, width, rows, null, x, xLd, scales, u, width);
    const second = rows >= cols ? k.int8Gemm(this.byRows, int8Stride(cols), cols, width, rows, scales, u, width, null, out, outLd) : k.int8Gemm(this.byCols, int8Stride(rows), rows, width, cols, scales, u, width, null, out, outLd);
    if (first < 0 || second < 0) throw new QkdError('STATE', `int8 Krylov product of a ${rows}×${cols} weight met a value that is not finite`);
  }
}

/**
 * The largest relative squared error ‖W − s·q‖²/‖W‖² at which a weight's
 * Krylov products run on its int8 copy. Gaussian weights quantize to about
 * 1e-4; a few columns 12× the rest (the audit grid's outliers) to about
 * 1.5e-3, where the concentration still moved by under 1e-3 (docs/algorithms.md §1).
 */
const INT8_MAX_ERROR = 2e-3;

/**
 * Weights with more values than this stay on bf16 unless int8 is asked for
 * (SpectrumOptions.int8): the int8 copy is fresh memory of the weight's
 * bf16 size (2 bytes per value, both layouts), and on the Llama-3.2-1B
 * shape its embedding (263M values) gained nothing from int8 while the
 * audit's peak memory went from 0.61 to 1.17 GB. The products got faster
 * (0.6–0.9 s less CPU time), but first touching fresh memory costs this guest
 * about 1.8 s per GB with huge pages (`npm run bench -- audit-phases`), and
 * the system time rose by as much.
 */
const INT8_MAX_VALUES = 1 << 26;

/** Whether a weight's Krylov products take the int8 route (see SpectrumOptions.int8). */
function wantsInt8(w: WeightData, rows: number, cols: number, options: SpectrumOptions): boolean {
  if (w instanceof Float32Array || rows % 4 !== 0 || cols % 4 !== 0) return false;
  // Asked for explicitly, int8 is taken at any size (the copy's memory is the caller's choice).
  if (options.int8 !== undefined) return options.int8;
  if (rows * cols > INT8_MAX_VALUES) return false;
  return options.exactProducts !== true && kernels().int8GemmFast() === 1;
}

/**
 * Grow-only scratch shared by successive calls (the profiler runs one
 * matrix after another): fresh multi-megabyte arrays cost a page fault per
 * 4 KB on first touch, a noticeable share of a small matrix's time. Every
 * buffer taken from here is written before it is read.
 */
class Workspace {
  private f32: Float32Array[] = [];
  private f64: Float64Array[] = [];
  private u16 = new Uint16Array(0);
  private u8: Uint8Array[] = [];

  /** n bf16 words (one slot). */
  uint16(n: number): Uint16Array {
    if (this.u16.length < n) this.u16 = adviseHugePages(new Uint16Array(n));
    return this.u16.subarray(0, n);
  }

  /** Byte buffer `slot` (0, 1) of n bytes. */
  uint8(slot: number, n: number): Uint8Array {
    if ((this.u8[slot]?.length ?? -1) < n) this.u8[slot] = adviseHugePages(new Uint8Array(n));
    return this.u8[slot]!.subarray(0, n);
  }

  /** Buffer `slot` (0, 1, …) as n floats. */
  float32(slot: number, n: number): Float32Array {
    if ((this.f32[slot]?.length ?? -1) < n) this.f32[slot] = adviseHugePages(new Float32Array(n));
    return this.f32[slot]!.subarray(0, n);
  }

  float64(slot: number, n: number): Float64Array {
    if ((this.f64[slot]?.length ?? -1) < n) this.f64[slot] = new Float64Array(n);
    return this.f64[slot]!.subarray(0, n);
  }
}

const workspace = new Workspace();

/** Values as the bf16 GEMM sees them (rounded to bfloat16, nearest even; finite input), or as they are. */
function asMultiplied(values: Float32Array, bf16: boolean): Float32Array {
  if (!bf16) return values;
  const out = new Float32Array(values.length);
  const from = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const to = new Uint32Array(out.buffer);
  for (let i = 0; i < from.length; i++) {
    const bits = from[i]!;
    to[i] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16;
  }
  return out;
}

function gemm(transA: boolean, M: number, N: number, K: number, a: Float32Array, lda: number, b: Float32Array, ldb: number, c: Float32Array, ldc: number, alpha = 1, beta = 0): void {
  kernels().sgemm({ batch: 1, transA, transB: false, M, N, K, alpha, a, lda, strideA: 0, b, ldb, strideB: 0, beta, c, ldc, strideC: 0 });
}

/** ZᵀZ of z [n, width] (ld) in float64, symmetrised. */
function gram(z: Float32Array, ld: number, n: number, width: number): Float64Array {
  const g32 = new Float32Array(width * width);
  gemm(true, width, width, n, z, ld, z, ld, g32, width);
  const g = new Float64Array(width * width);
  for (let i = 0; i < width; i++) for (let j = 0; j < width; j++) g[i * width + j] = 0.5 * (g32[i * width + j]! + g32[j * width + i]!);
  return g;
}

/** A CholeskyQR pass whose pivots spread less than this needs no second pass (orthonormal to ~ε·ratio²). */
const ONE_PASS_CONDITION = 30;

/**
 * Orthonormalises the columns of z [n, width] (ld zLd; g = its Gram matrix
 * in float64) that add a direction into out [n, r] (ld outLd) and returns
 * r. scratch [n, width] is overwritten; z may be overwritten (out may be z).
 *
 * Pivoted CholeskyQR dropping the columns whose remaining part is below
 * DROP_TOLERANCE of `norm2` (their squared length before they were
 * orthogonalised against the earlier blocks), then, when the pivots spread
 * by more than ONE_PASS_CONDITION, a second CholeskyQR pass to restore
 * orthonormality to float32 rounding. With `norm2` null the columns keep
 * their order (a random start block, whose first columns are the probes).
 */
function orthonormalize(z: Float32Array, zLd: number, n: number, width: number, g: Float64Array, norm2: Float64Array | null, out: Float32Array, outLd: number, scratch: Float32Array): number {
  // The columns kept (in pivot order), the factor's diagonal and its inverse L⁻¹ (r×r): in order when the
  // plain Cholesky of a start block succeeds, else by the pivoted Cholesky kernel (tensor/factor.ts's bits).
  const plain = norm2 === null ? inOrder(g, width) : null;
  let r: number;
  let order: ArrayLike<number>;
  let diag: ArrayLike<number>;
  let inv: Float64Array;
  if (plain !== null) {
    order = plain.order;
    r = plain.order.length;
    diag = Float64Array.from({ length: r }, (_, i) => plain.L[i * r + i]!);
    inv = invertLower(plain.L, r);
  } else {
    const pivots = new Float64Array(width);
    const d = new Float64Array(width);
    inv = new Float64Array(width * width);
    r = kernels().pivotedCholeskyInverse(g, width, norm2 ?? diagonal(g, width), DROP_TOLERANCE, pivots, d, inv);
    order = pivots;
    diag = d;
  }
  if (r === 0) return 0;
  let smallest = Infinity;
  let largest = 0;
  for (let i = 0; i < r; i++) {
    smallest = Math.min(smallest, diag[i]!);
    largest = Math.max(largest, diag[i]!);
  }
  const twoPasses = largest > ONE_PASS_CONDITION * smallest;
  // (z[:, order] · L⁻ᵀ) = z · S with S[order[i], j] = L⁻¹[j, i].
  const s = new Float32Array(width * r);
  for (let i = 0; i < r; i++) for (let j = i; j < r; j++) s[order[i]! * r + j] = inv[j * r + i]!;
  if (!twoPasses) {
    if (out !== z) {
      gemm(false, n, r, width, z, zLd, s, r, out, outLd);
      return r;
    }
    gemm(false, n, r, width, z, zLd, s, r, scratch, r);
    for (let i = 0; i < n; i++) out.set(scratch.subarray(i * r, i * r + r), i * outLd);
    return r;
  }
  gemm(false, n, r, width, z, zLd, s, r, scratch, r);
  const L2 = cholesky(gram(scratch, r, n, r), r);
  const t = new Float32Array(r * r);
  if (L2 === null) {
    for (let i = 0; i < r; i++) t[i * r + i] = 1;
  } else {
    const inv2 = invertLower(L2, r);
    for (let i = 0; i < r; i++) for (let j = i; j < r; j++) t[i * r + j] = inv2[j * r + i]!;
  }
  gemm(false, n, r, r, scratch, r, t, r, out, outLd);
  return r;
}

function diagonal(g: Float64Array, width: number): Float64Array {
  const out = new Float64Array(width);
  for (let i = 0; i < width; i++) out[i] = g[i * width + i]!;
  return out;
}

/** Cholesky of g without pivoting (columns in order), or null when a pivot is not clearly positive. */
function inOrder(g: Float64Array, width: number): { order: number[]; L: Float64Array } | null {
  const L = cholesky(g, width);
  if (L === null) return null;
  for (let i = 0; i < width; i++) if (!(L[i * width + i]! ** 2 > DROP_TOLERANCE * g[i * width + i]!)) return null;
  return { order: Array.from({ length: width }, (_, i) => i), L };
}

function columnNorms2(z: Float32Array, ld: number, n: number, width: number): Float64Array {
  const out = new Float64Array(width);
  for (let i = 0; i < n; i++) for (let j = 0; j < width; j++) out[j]! += z[i * ld + j]! ** 2;
  return out;
}

function gaussianBlock(n: number, width: number, rng: Rng): Float32Array {
  return Float32Array.from(rng.fillNormal(new Float64Array(n * width), kernels().normalFill));
}

/**
 * A random start block [n, width]: the first `gaussian` columns standard
 * normal (they become the noise probes, which must be isotropic), the rest
 * random signs — as good a start for the Krylov space, at 1/32 of a
 * generator call each instead of a Box–Muller half. Drawn row by row
 * (normals, then signs) by kernels().startBlockFill.
 */
function startBlock(n: number, width: number, gaussian: number, rng: Rng): Float32Array {
  const out = workspace.float32(5, n * width);
  rng.advanceWith((state, spare) => kernels().startBlockFill(state, spare, out, n, width, gaussian));
  return out;
}

/** The ‖W x‖² of `count` probes when the Krylov start block cannot provide them. */
function separateProbes(op: WeightOperator, count: number, rng: Rng): ProbeProducts {
  const x = asMultiplied(gaussianBlock(op.cols, count, rng), op.bf16);
  const y = new Float32Array(op.rows * count);
  if (op.tall) op.apply(x, count, count, y, count);
  else op.applyTransposed(x, count, count, y, count);
  return { wx2: columnNorms2(y, count, op.rows, count), x2: columnNorms2(x, count, op.cols, count) };
}

interface RitzResult {
  /** Estimates of σ₁ ≥ … ≥ σ_k (zeros past an exhausted subspace). */
  sigma: Float64Array;
  probes: ProbeProducts | null;
}

/** The weight as the GEMMs will take it: bf16 as stored, float32 rounded to bf16 unless exactProducts. */
function multiplied(w: WeightData, options: SpectrumOptions): WeightData {
  if (!(w instanceof Float32Array) || options.exactProducts === true) return w;
  const bits = workspace.uint16(w.length);
  kernels().f32ToBf16(w, bits, w.length);
  return { bf16: bits };
}

/** The block Krylov estimate (see the file comment), with probe products if asked for. */
function krylovSingularValues(weight: WeightData, rows: number, cols: number, k: number, options: SpectrumOptions): RitzResult {
  const { h, width, wanted, probes } = krylovProjection(weight, rows, cols, k, options);
  return { sigma: sigmaFromEigenvalues(padded(symmetricEigenvalues(h, width, wanted), k), k), probes };
}

/** theta followed by zeros up to k values (the Ritz values an exhausted subspace does not have). */
function padded(theta: Float64Array, k: number): Float64Array {
  if (theta.length >= k) return theta;
  const out = new Float64Array(k);
  out.set(theta);
  return out;
}

/**
 * The Krylov pass up to its Ritz values: H = Qᵀ G Q on the basis it built
 * (width × width, lower triangle, float64), how many of its eigenvalues are
 * wanted, and the probe products.
 */
interface KrylovProjection {
  h: Float64Array;
  width: number;
  wanted: number;
  probes: ProbeProducts | null;
  method: SpectrumMethod;
  /** Width of the start block Q₀ (its rows of H's eigenvectors give the quadrature weights). */
  head: number;
  /** Width of the last block, whose part outside the basis is Z (0 when the space stopped growing: Z = 0). */
  tail: number;
  /** ZᵀZ (tail × tail, float64) of the last block's product outside the basis: the Ritz pairs' residuals. */
  zz: Float64Array;
}

function krylovProjection(weight: WeightData, rows: number, cols: number, k: number, options: SpectrumOptions): KrylovProjection {
  const w = multiplied(weight, options);
  const op = new WeightOperator(w, rows, cols);
  const int8 = !(w instanceof Float32Array) && wantsInt8(w, rows, cols, options) ? Int8Weight.of(w.bf16, rows, cols) : null;
  const { M, N } = op;
  const { blockSize: b, depth } = krylovShape(k, N, options.depth ?? DEFAULT_DEPTH, options.dimensionsPerRank ?? DIMENSIONS_PER_RANK);
  const D = Math.min(N, b * (depth + 1));
  const rng = options.rng;
  const wantProbes = options.probes ?? 0;
  // Q [N, D + b]: the orthonormal basis in block columns (a block may run up
  // to b columns past D before the last one is cut to D).
  const ld = D + b;
  const Q = workspace.float32(0, N * ld);
  const H = workspace.float64(0, D * D); // Qᵀ G Q, lower triangle
  const u = workspace.float32(1, M * b);
  const scratch = workspace.float32(2, Math.max(N, M) * b);
  const c = workspace.float32(3, D * b);
  // Yⱼ = Aᵀ A Qⱼ [N, b], orthogonalised there before its orthonormal part joins Q.
  const Y = workspace.float32(8, N * b);
  let probes: ProbeProducts | null = null;

  // Start block: random directions in A's input space (N), isotropic in
  // distribution (its rows are independent and symmetric), which the
  // quadrature weights (swan/quadrature.ts) assume. For a tall W that is
  // W's input side, and the first pass A·Q₀ = W·Q₀ gives the noise probes;
  // a wide W takes them from a product of their own (separateProbes).
  const gaussian = op.tall && wantProbes <= b ? wantProbes : 0;
  const start = startBlock(N, b, gaussian, rng);
  let r = orthonormalize(start, b, N, b, gram(start, b, N, b), null, Q, ld, scratch);
  const head = r;
  let tail = 0;
  let zz: Float64Array = new Float64Array(0);
  let width = 0;
  let blocks = 0;
  // The estimated loss of orthogonality of the last two blocks against the rest (ORTHOGONALITY_LOSS).
  let lastLoss = PASS_LOSS;
  let previousLoss = 0;
  for (let j = 0; r > 0; j++) {
    r = Math.min(r, D - width);
    const first = width;
    width += r;
    blocks++;
    // Yⱼ = Aᵀ(A Qⱼ) into Y (the bf16 GEMM multiplies Qⱼ rounded to bf16).
    // For a tall W, ‖A qᵢ‖ = ‖W qᵢ‖ of the first columns are the probe
    // products.
    const probeCount = j === 0 && op.tall && gaussian > 0 && gaussian <= r ? gaussian : 0;
    let wx2: Float64Array | null = null;
    if (int8 === null) wx2 = op.applyGram(Q.subarray(first), ld, r, Y, r, u, probeCount);
    else int8.applyGram(Q.subarray(first), ld, r, Y, r, u);
    if (probeCount > 0) {
      const x = new Float32Array(N * gaussian);
      for (let i = 0; i < N; i++) x.set(Q.subarray(i * ld, i * ld + gaussian), i * gaussian);
      if (wx2 === null) {
        // On the int8 route the noise metric's products stay on the bf16 GEMM (one product
        // `gaussian` columns wide): the int8 rounding of x and W would move ‖W x‖² by ~1e-3.
        const y = new Float32Array(M * gaussian);
        op.apply(x, gaussian, gaussian, y, gaussian);
        wx2 = columnNorms2(y, gaussian, M, gaussian);
      }
      probes = { wx2, x2: columnNorms2(asMultiplied(x, op.bf16), gaussian, N, gaussian) };
    }
    // c = Q≤ⱼᵀ Yⱼ: column block j of H (rows 0..width) and the
    // coefficients that orthogonalise Yⱼ against the basis.
    gemm(true, width, r, N, Q, ld, Y, r, c, r);
    storeColumnBlock(H, D, c, r, first);
    gemm(false, N, r, width, Q, ld, c, r, Y, r, -1, 1);
    if (j === depth || width >= D) {
      // The last block's product outside the basis, Z: G·Q = Q·H + Z·E_lastᵀ, so a Ritz pair (θ, y) has
      // residual ‖Z·y_last‖ (one Gram–Schmidt pass: an estimate, which is all the convergence test needs).
      tail = r;
      zz = gram(Y, r, N, r);
      break;
    }
    let g = gram(Y, r, N, r);
    // ‖yᵢ‖² before the subtraction, by Pythagoras (the basis is orthonormal to
    // within ORTHOGONALITY_LOSS): its part in the basis plus what is left.
    const norms = new Float64Array(r);
    for (let l = 0; l < width; l++) for (let i = 0; i < r; i++) norms[i]! += c[l * r + i]! ** 2;
    for (let i = 0; i < r; i++) norms[i]! += g[i * r + i]!;
    let kappa2 = 1;
    for (let i = 0; i < r; i++) kappa2 = Math.max(kappa2, norms[i]! / Math.max(g[i * r + i]!, Number.MIN_VALUE));
    let loss = (Math.max(lastLoss, previousLoss) + PASS_LOSS) * Math.sqrt(kappa2);
    if (kappa2 > 1 / REORTHOGONALIZE || loss > ORTHOGONALITY_LOSS) {
      gemm(true, width, r, N, Q, ld, Y, r, c, r);
      gemm(false, N, r, width, Q, ld, c, r, Y, r, -1, 1);
      g = gram(Y, r, N, r);
      loss = PASS_LOSS;
    }
    previousLoss = lastLoss;
    lastLoss = loss;
    // The orthonormal columns go straight into the basis, after its first `width`.
    r = orthonormalize(Y, r, N, r, g, norms, Q.subarray(width), ld, scratch);
    if (r < b && width + r < D) r += restartColumns(w, rows, cols, H, D, width, r, Math.min(b, D - width) - r, Q, ld, rng, scratch);
  }
  if (probes === null && wantProbes > 0) probes = separateProbes(op, wantProbes, rng);

  // Ritz values: the eigenvalues of H on the `width` columns. (Its entries
  // below block row j+1 come from column block j+1's c by symmetry, so each
  // is computed once.)
  let h = H;
  if (width < D) {
    h = workspace.float64(1, width * width);
    for (let i = 0; i < width; i++) h.set(H.subarray(i * D, i * D + i + 1), i * width);
  }
  const products = int8 !== null ? 'int8' : w instanceof Float32Array ? 'f32' : 'bf16';
  // The depth the pass reached: krylovShape's, or less when the space stopped growing (an exactly low-rank W).
  return { h, width, wanted: Math.min(k, width), probes, method: { route: 'krylov', block: b, depth: Math.max(0, blocks - 1), dimensions: width, products }, head: Math.min(head, width), tail, zz };
}

/**
 * The share of ‖W‖²_F the basis must hold before a Krylov space that stopped
 * growing is left as it is (restartColumns).
 */
const RESTART_BELOW = 1 - 1e-3;

/**
 * A block that lost columns (the Krylov space stopped growing in those
 * directions: a singular value whose multiplicity exceeds the block, as in
 * an identity or an orthogonal matrix multiplied exactly) gets random
 * directions orthogonal to the basis in their place, while the basis holds
 * less than RESTART_BELOW of ‖W‖²_F (trace H = ‖A Q‖²_F against one more
 * pass over W, taken only here). Without it the missing Ritz values counted
 * as 0: an identity 600 × 600 reported a concentration of 0.027 for 0.1.
 * An exactly low-rank W, whose basis already holds its whole energy, is
 * not restarted. Returns the columns added after the `kept` new ones.
 */
function restartColumns(w: WeightData, rows: number, cols: number, H: Float64Array, ldH: number, width: number, kept: number, missing: number, Q: Float32Array, ld: number, rng: Rng, scratch: Float32Array): number {
  let trace = 0;
  for (let i = 0; i < width; i++) trace += H[i * ldH + i]!;
  if (!(trace < RESTART_BELOW * weightStatistics(w, rows, cols, 0).frobenius2)) return 0;
  const basis = width + kept;
  const N = Math.min(rows, cols);
  const z = gaussianBlock(N, missing, rng);
  const before = diagonal(gram(z, missing, N, missing), missing);
  const c = new Float32Array(basis * missing);
  // Twice against the basis (classical Gram–Schmidt, "twice is enough"): random directions cancel little.
  for (let pass = 0; pass < 2; pass++) {
    gemm(true, basis, missing, N, Q, ld, z, missing, c, missing);
    gemm(false, N, missing, basis, Q, ld, c, missing, z, missing, -1, 1);
  }
  const g = gram(z, missing, N, missing);
  return orthonormalize(z, missing, N, missing, g, before, Q.subarray(basis), ld, scratch);
}

/**
 * Stores c = Q[:, 0..first+r]ᵀ Yⱼ ((first + r) × r) as column block `first`
 * of the lower triangle of H [·, ld]: the rows above the block mirror into
 * its rows; the diagonal block is symmetrised.
 */
function storeColumnBlock(H: Float64Array, ld: number, c: Float32Array, r: number, first: number): void {
  for (let i = 0; i < first; i++) for (let a = 0; a < r; a++) H[(first + a) * ld + i] = c[i * r + a]!;
  for (let a = 0; a < r; a++) for (let b = 0; b <= a; b++) H[(first + a) * ld + first + b] = 0.5 * (c[(first + a) * r + b]! + c[(first + b) * r + a]!);
}

/**
 * The route a matrix takes, by its short side N. The exact route forms the
 * Gram matrix AᵀA (one SGEMM) and solves its top eigenvalues; the block
 * Krylov pass makes 2(q+1) passes over W plus the basis upkeep, about five
 * GEMM calls per block. For a short side up to GRAM_MAX_SIDE the exact route
 * is both faster (the Krylov pass is dominated by its many small calls: at
 * N = 512 its block was 8 columns wide, 18 blocks deep, at the Ritz sum's subspace) and exact; above it
 * the Krylov pass wins (measured on this machine's 2 cores: 768×256 7.4 ms
 * exact against 19.7 ms Krylov; 2048×2048 731 against 39). At N = 512 the
 * two are close with the eigen-solve counted in, but in `qkd audit` the
 * exact route's solve runs in the background: there a width-512 model of
 * 42M parameters took 0.78–0.86 s with this limit at 512 and the
 * lower-triangle Gram matrix, against 0.94–1.01 s before (BENCHMARKS.md,
 * the audit grid).
 */
export function spectrumRoute(rows: number, cols: number): 'gram' | 'krylov' {
  return Math.min(rows, cols) <= GRAM_MAX_SIDE ? 'gram' : 'krylov';
}

/** The largest short side that takes the exact Gram route. */
export const GRAM_MAX_SIDE = 512;

/**
 * The exact route: the top-k eigenvalues of the Gram matrix AᵀA (A = W
 * oriented tall; float32 products summed by the SGEMM, eigenvalues in
 * float64), and separate probe products when asked for.
 */
function gramSingularValues(weight: WeightData, rows: number, cols: number, k: number, options: SpectrumOptions): RitzResult {
  const N = Math.min(rows, cols);
  const g = workspace.float32(6, N * N);
  const probes = gramAndProbes(weight, rows, cols, g, options);
  return { sigma: sigmaFromEigenvalues(solveNow({ gram: g, n: N, count: k, heads: 0, tails: 0 }), k), probes };
}

/** How many values a deferred solve returns: its eigenvalues, then its eigenvector rows. */
export function solveResults(solve: EigenSolve): number {
  return solve.count * (1 + solve.heads + solve.tails);
}

/** A deferred solve (DeferredSpectrum.solve) done at once: the batch kernel with one matrix, waited for (the same solve profileModel runs in batches in the background). */
export function solveNow(solve: EigenSolve): Float64Array {
  const out = new Float64Array(solveResults(solve));
  if (solve.count > 0) kernels().eigenBatchWait(kernels().eigenBatchStart(solve.gram, Int32Array.of(solve.n), Int32Array.of(solve.count), Int32Array.of(solve.heads), Int32Array.of(solve.tails)), out);
  return out;
}

/**
 * The exact route up to its eigen-solve: the lower triangle of the Gram
 * matrix AᵀA into g[0, N²) (float32, as the SGEMM sums it; the entries
 * above the diagonal are left as they were), and the probe products when
 * asked for.
 */
function gramAndProbes(weight: WeightData, rows: number, cols: number, g: Float32Array, options: SpectrumOptions): ProbeProducts | null {
  const w = weight instanceof Float32Array ? weight : widened(weight.bf16);
  const tall = rows >= cols;
  const N = Math.min(rows, cols);
  const K = Math.max(rows, cols);
  // Tall: G = WᵀW [cols, cols]; wide: G = W·Wᵀ [rows, rows] (same non-zero eigenvalues).
  // Only the lower triangle, which is all the eigen-solve reads: column panels
  // [j0, j0 + P) from row j0 down (for N = 512, 56% of the full product's flops).
  // Column j0 of W (tall) or row j0 (wide) starts at element j0 or j0·cols.
  // A bf16 weight goes through the bf16 GEMM (twice the multiply-adds per instruction of the SGEMM): its products
  // are exact in float32 either way, and the panel it is multiplied by is the widened copy, which the GEMM's
  // rounding of B leaves as it is. Only the order of the float32 sums differs. A float32 weight keeps the SGEMM
  // and its exact products (the Krylov route rounds it to bf16; this route does not).
  for (let j0 = 0; j0 < N; j0 += GRAM_PANEL) {
    const at = tall ? j0 : j0 * cols;
    const part = w.subarray(at);
    const c = g.subarray(j0 * N + j0);
    const width = Math.min(GRAM_PANEL, N - j0);
    if (weight instanceof Float32Array) {
      kernels().sgemm({ batch: 1, transA: tall, transB: !tall, M: N - j0, N: width, K, alpha: 1, a: part, lda: cols, strideA: 0, b: part, ldb: cols, strideB: 0, beta: 0, c, ldc: N, strideC: 0 });
    } else {
      kernels().bf16Gemm({ transA: tall, transB: !tall, M: N - j0, N: width, K, a: weight.bf16.subarray(at), lda: cols, b: part, ldb: cols, c, ldc: N });
    }
  }
  const wantProbes = options.probes ?? 0;
  return wantProbes > 0 ? separateProbes(new WeightOperator(multiplied(weight, options), rows, cols), wantProbes, options.rng) : null;
}

/** Columns of the Gram matrix per product (see gramAndProbes). */
const GRAM_PANEL = 64;

/** σᵢ = √max(0, θᵢ) for the first k eigenvalues. */
function sigmaFromEigenvalues(theta: Float64Array, k: number): Float64Array {
  const sigma = new Float64Array(k);
  for (let i = 0; i < k; i++) sigma[i] = Math.sqrt(Math.max(0, theta[i]!));
  return sigma;
}

/** bf16 bits as float32 (a workspace slot). */
function widened(bits: Uint16Array): Float32Array {
  const out = workspace.float32(7, bits.length);
  kernels().bf16ToF32(bits, out, bits.length);
  return out;
}

/** The estimate of the route spectrumRoute picks. */
function singularValues(w: WeightData, rows: number, cols: number, k: number, options: SpectrumOptions): RitzResult {
  return (options.route ?? spectrumRoute(rows, cols)) === 'gram' ? gramSingularValues(w, rows, cols, k, options) : krylovSingularValues(w, rows, cols, k, options);
}

/** Estimates of the top min(k, m, n) singular values of W, descending. */
export function topSingularValues(w: WeightData, rows: number, cols: number, k: number, options: SpectrumOptions): Float64Array {
  if (Math.min(rows, cols) === 0) return new Float64Array(0);
  return singularValues(w, rows, cols, Math.min(k, rows, cols), options).sigma;
}

/**
 * Spectral concentration c = Σ_{i ≤ r} σ_i² / ‖W‖_F² with r = ceil(0.1 · min(m, n)),
 * and σ_max/‖W‖_F. ‖W‖_F² is exact (float64 sum). The Krylov route reads
 * the top-r energy by quadrature (swan/quadrature.ts), whatever the rank
 * cap. On the exact route, when r exceeds the rank cap k, σ_{k+1..r} are
 * not solved for: their energy lies between the even share (r−k)/(p−k) of
 * the residual and min(residual, (r−k)·σ_k²), and the midpoint of those
 * bounds is used (flagged as estimatedTail).
 */
export function spectralSummary(w: WeightData, rows: number, cols: number, frobenius2: number, options: SpectrumOptions): SpectrumSummary {
  const deferred = deferredSpectralSummary(w, rows, cols, frobenius2, options);
  const solve = deferred.solve;
  return deferred.finish(solve === null ? null : solveNow(solve));
}

/**
 * A spectral summary whose one eigen-solve is left to the caller, so that a
 * caller profiling many tensors can solve several at once
 * (kernels().eigenBatchStart: one matrix per pool thread, in the background).
 */
export interface DeferredSpectrum {
  /**
   * The eigen-solve still to do: the `count` largest eigenvalues of the
   * symmetric n×n `gram` (float32: the Gram matrix AᵀA on the exact route,
   * the projected H = QᵀGQ on the Krylov route; only the lower triangle is
   * read, and on the exact route only it is set), and on the Krylov route
   * rows of their eigenvectors (kernels().eigenBatchStart's heads and
   * tails); null when the summary needs none (W is zero, or the Krylov
   * subspace came out empty).
   */
  readonly solve: EigenSolve | null;
  /** The probe products, known before the solve. */
  readonly probes: ProbeProducts | null;
  /** The summary, given the solve's results (solveResults values; null when solve is null). */
  finish(results: Float64Array | null): SpectrumSummary;
}

/** One matrix for kernels().eigenBatchStart. */
export interface EigenSolve {
  readonly gram: Float32Array;
  readonly n: number;
  readonly count: number;
  readonly heads: number;
  readonly tails: number;
}

/**
 * A weight whose root mean square lies outside [2⁻²⁰, 2¹⁰] has its spectrum
 * taken from a copy multiplied by a power of two (exact), that brings it
 * near 1. The products and the basis upkeep sum squares in float32
 * (YᵀY of Y = AᵀA·Q grows like M²·N·rms⁴ for an M×N weight): on a 600×600
 * weight at a scale of 1e-12 they underflowed and the Krylov route
 * reported σ_max twice too large, at 1e9 they overflowed, and the bf16
 * GEMM flushes products below 2⁻¹²⁶. The upper bound leaves room for
 * embeddings of 10⁶ rows. The concentration and σ_max/‖W‖_F do not depend
 * on the scale; trained weights (rms 1e-3 to 1) never take the copy.
 */
const RESCALE_BELOW = 2 ** -20;
const RESCALE_ABOVE = 2 ** 10;

/** 1, or the power of two that brings the rms of W (n values, ‖W‖²_F = frobenius2 > 0) near 1. */
function powerOfTwoScale(frobenius2: number, n: number): number {
  const rms = Math.sqrt(frobenius2 / n);
  if (rms >= RESCALE_BELOW && rms <= RESCALE_ABOVE) return 1;
  return 2 ** -Math.round(Math.log2(rms));
}

/** W·scale in float32 (exact for a power of two, unless a value leaves float32's range). */
function scaledCopy(w: WeightData, scale: number): Float32Array {
  const out = w instanceof Float32Array ? new Float32Array(w) : fromBf16(w.bf16);
  for (let i = 0; i < out.length; i++) out[i] = out[i]! * scale;
  return out;
}

/**
 * spectralSummary up to its eigen-solve. Everything that reads W (the Gram
 * matrix or the Krylov passes, and the probes) is done, so W may be
 * overwritten before finish. The Gram matrix goes to `place(n·n)` when given
 * (a caller packing several solves into one buffer), else to a fresh array.
 */
export function deferredSpectralSummary(
  w: WeightData,
  rows: number,
  cols: number,
  frobenius2: number,
  options: SpectrumOptions,
  place: (values: number) => Float32Array = (values) => new Float32Array(values),
): DeferredSpectrum {
  const p = Math.min(rows, cols);
  const r = Math.max(1, Math.ceil(0.1 * p));
  const cap = options.maxRank ?? 256;
  const k = Math.min(r, cap);
  const perRank = options.dimensionsPerRank;
  if (perRank !== undefined && !(perRank >= 0.25 && perRank <= 16)) {
    throw new QkdError('ARGUMENT', `spectralSummary: dimensionsPerRank ${perRank} is out of range`, { field: 'dimensionsPerRank', hint: 'a number from 0.25 to 16' });
  }
  if (Number.isNaN(frobenius2) || frobenius2 === Infinity) {
    throw new QkdError('ARGUMENT', `spectralSummary: ‖W‖²_F of the ${rows}×${cols} weight is ${frobenius2}: it holds NaN or infinite values`, { field: 'frobenius2', hint: 'a weight of finite values' });
  }
  if (!(frobenius2 > 0) || p === 0) {
    const summary: SpectrumSummary = { concentration: 0, sigmaMaxOverFro: 0, topCount: r, estimatedTail: false, probes: null, method: { route: 'none' } };
    return { solve: null, probes: null, finish: () => summary };
  }
  const scale = powerOfTwoScale(frobenius2, rows * cols);
  if (scale !== 1) {
    // Ratios do not change with the scale; ‖W x‖² of the probes comes back to W's own.
    const inner = deferredSpectralSummary(scaledCopy(w, scale), rows, cols, frobenius2 * scale * scale, options, place);
    const probes = inner.probes === null ? null : { wx2: inner.probes.wx2.map((v) => v / (scale * scale)), x2: inner.probes.x2 };
    return { solve: inner.solve, probes, finish: (theta) => ({ ...inner.finish(theta), probes }) };
  }
  if ((options.route ?? spectrumRoute(rows, cols)) === 'gram') {
    const gram = place(p * p);
    const probes = gramAndProbes(w, rows, cols, gram, options);
    return {
      solve: { gram, n: p, count: k, heads: 0, tails: 0 },
      probes,
      finish: (theta) => {
        if (theta === null || theta.length < k) throw new QkdError('STATE', `spectralSummary: the eigen-solve returned ${theta?.length ?? 'no'} values, ${k} wanted`);
        return summarize(sigmaFromEigenvalues(theta, k), probes, r, k, p, frobenius2, { route: 'exact' });
      },
    };
  }
  // The solve is deferred like the exact route's: H in float32 (the lower
  // triangle, all the solve reads), reduced in float32 by the batch kernel,
  // all its eigenvalues and the rows of their eigenvectors that belong to
  // the first and the last block.
  const projection = krylovProjection(w, rows, cols, k, options);
  const { h, width, probes, method } = projection;
  const gram = place(width * width);
  for (let i = 0; i < width; i++) gram.set(h.subarray(i * width, i * width + i + 1), i * width);
  // A single block is both first and last: then all its rows are asked for once.
  const overlap = projection.head + projection.tail > width;
  const solve: EigenSolve = { gram, n: width, count: width, heads: overlap ? width : projection.head, tails: overlap ? 0 : projection.tail };
  return {
    solve: width > 0 ? solve : null,
    probes,
    finish: (results) => spectralFromKrylov(results ?? new Float64Array(0), solve, projection, p, r, frobenius2, probes, method),
  };
}

/** The spectral summary of the Krylov route from its eigen-solve: the top-r energy by quadrature (swan/quadrature.ts). */
function spectralFromKrylov(results: Float64Array, solve: EigenSolve, projection: KrylovProjection, N: number, r: number, frobenius2: number, probes: ProbeProducts | null, method: SpectrumMethod): SpectrumSummary {
  if (results.length < solveResults(solve)) throw new QkdError('STATE', `spectralSummary: the eigen-solve returned ${results.length} values, ${solveResults(solve)} wanted`);
  const { sum, top } = quadratureTopSum(results, solve, projection, N, r, frobenius2);
  return { concentration: Math.min(1, sum / frobenius2), sigmaMaxOverFro: Math.min(1, Math.sqrt(top) / Math.sqrt(frobenius2)), topCount: r, estimatedTail: false, probes, method };
}

/** The summary from the top-k σ estimates (r wanted, short side p). */
function summarize(sigma: Float64Array, probes: ProbeProducts | null, r: number, k: number, p: number, frobenius2: number, method: SpectrumMethod): SpectrumSummary {
  let top = 0;
  for (let i = 0; i < k; i++) top += sigma[i]! ** 2;
  let estimatedTail = false;
  if (r > k) {
    const residual = Math.max(0, frobenius2 - top);
    const low = (residual * (r - k)) / (p - k);
    const high = Math.min(residual, (r - k) * sigma[k - 1]! ** 2);
    top += 0.5 * (low + high);
    estimatedTail = true;
  }
  const fro = Math.sqrt(frobenius2);
  return { concentration: Math.min(1, top / frobenius2), sigmaMaxOverFro: Math.min(1, sigma[0]! / fro), topCount: r, estimatedTail, probes, method };
}
